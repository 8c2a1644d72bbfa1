from hub_cache import hub_cache, no_network  # noqa: F401  (fixtures of the Hub tests)
