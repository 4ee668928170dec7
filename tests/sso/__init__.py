"""Single sign-on tests: services, and end to end against a real OpenID provider."""
