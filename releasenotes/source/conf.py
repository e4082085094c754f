# Sphinx configuration for the nova_stealth release notes.

project = 'nova_stealth Release Notes'
copyright = '2026, The nova_stealth Authors'
extensions = ['reno.sphinxext']
master_doc = 'index'
html_theme = 'alabaster'
