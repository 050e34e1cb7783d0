"""abusebot: a Matrix protection bot for a community's moderators."""

__version__ = "0.1.0"
