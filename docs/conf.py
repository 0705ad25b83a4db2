"""Sphinx's settings for the documentation site: Markdown pages read by MyST, the Furo theme, and
nothing loaded from the network (no web font, no CDN script, no analytics), so `make docs` builds
it and a browser reads it offline."""

from sphinx import addnodes

project = "flask-app"
html_title = "flask-app"
extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
# Headings up to ### get anchors, so a page links a section as page.md#its-title.
myst_heading_anchors = 3
# What make writes beside the pages (the measured runs' JSON) is data, not pages. compare.md and
# bench.md are the tables `make compare` and `make bench` also write into images.md and measured.md,
# and lesson/5-practices.md includes lessons.md: the site shows each once, there.
exclude_patterns = ["_build", "**/*.json", "reference/compare.md", "reference/bench.md", "reference/lessons.md"]
html_theme = "furo"
# The site's own style sheet, served from docs/_static/ like the theme's: step 5's table at a phone's width.
html_static_path = ["_static"]
html_css_files = ["practices.css"]
# No "view source" links and no copy of the Markdown in the site: the repository holds it.
html_show_sourcelink = False
html_copy_source = False
# No general index: the pages mark no terms for it, and no page links to it.
html_use_index = False
# No copyright line: the pages name no holder, and an empty "Copyright ©" says nothing.
html_show_copyright = False


def drop_glossary_index_entries(app, doctree):
    """Sphinx's glossary makes each term an index entry too, and its search ranks an index entry
    above every page: searching HEALTHCHECK would open the glossary, not the lesson that teaches it.
    The site has no index to list them in, so the entries go; each term keeps its anchor."""
    for glossary in doctree.findall(addnodes.glossary):
        for entry in list(glossary.findall(addnodes.index)):
            entry.parent.remove(entry)


def setup(app):
    app.connect("doctree-read", drop_glossary_index_entries)
