"""Drawing results: Rich tables, matplotlib figures, the HTML report. No torch."""
