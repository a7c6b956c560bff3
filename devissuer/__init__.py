"""The development issuer: Auth0-like issuers over real HTTP, for the demo and the tests only."""
