"""The train and eval tasks: build from config, fit, test, record."""
