"""The data contract, loaders, validation, the shop simulator, importers and point-in-time features."""
