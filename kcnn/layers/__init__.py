"""Custom Keras layers, one public layer per file, registered under the "kcnn" package."""
