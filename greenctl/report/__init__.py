"""Reports over stored rows.

build       the one database read: an experiment's rows -> the report dict (JSON contract of issue 2, extended)
metrics     pure metrics: scikit-learn scores, confusion, 95 % intervals, Pareto front, energy split
units       pure formatting: kg/g/mg/µg and kWh/Wh/mWh/µWh chosen so nothing prints as 0.000
tables      what every human format shows (terminal, Markdown, HTML), once
render      terminal (rich) and JSON;  export  CSV and Markdown;  html_page  one self-contained HTML file
figures     matplotlib PNGs: CO2e vs F1 with the Pareto front, energy by phase, confusion matrices
compare     the same variant across experiments and machines
recommend   the green ranking: least CO2e per inference meeting an F1 floor
estimates   the estimator's CO2e for variants not measured yet (reads stored fits)
"""
