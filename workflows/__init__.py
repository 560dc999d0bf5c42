"""The service-desk domain: settings, database, models and the services that run tickets."""
