"""What a reader opens: reports/index.html, the generated tables of README.md and docs/, and the
collected result files they are generated from.

May import: every wing below it; the tables read core, analysis and the merge catalog (torch-free).
"""
