# Sphinx configuration for the nova_stealth documentation.

project = 'nova_stealth'
copyright = '2026, The nova_stealth Authors'
extensions = ['oslo_config.sphinxext']
master_doc = 'index'
exclude_patterns = []
html_theme = 'alabaster'
