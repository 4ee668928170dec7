"""Template tags of the sso app."""
