"""Converting PolicyLayer's Intercept policies to policy v1 (``toolgate import intercept``)."""
