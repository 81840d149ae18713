"""Identity: API keys, JWT verification, scopes; the service and the Flask guards."""
