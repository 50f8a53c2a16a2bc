"""Root of the test suite. Shared helpers live in modules beside it (`services.py`):
pytest imports every conftest.py as the module `conftest`, so importing helpers from a
conftest would pick whichever was loaded last.
"""
