"""Files that ship with Mimir AIP: example pipelines and their data, sample ontologies and
the console's stylesheet. Installed as ``mimir.resources``; find them with
``mimir.core.resources`` (a regular package, so ``importlib.resources.files`` finds it in a
checkout, an installed wheel and the PyInstaller bundle alike)."""
