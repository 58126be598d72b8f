# Phase "stats" and phase "tables": mean +- std and t-tests -> reports/metrics.json (and the
# metric files as one table, reports/metrics.csv) ->
# reports/tables.tex, figures and reports/report.pdf.
#
# Outputs marked report(...) make Snakemake's own report, with the captions of workflow/report/:
#   snakemake --report reports/report.html
import shlex
import shutil

from pathlib import Path

from ddm.resources import PUBLISHED_CSV  # the package's published results (ddm/data, importlib.resources)

include: "helpers/report.smk"  # the functions only these rules use

# Relative where the package lies in the working directory (a checkout: ddm/data/published.csv, as
# dvc.yaml names it), so a moved or copied checkout keeps its rule inputs and reruns nothing.
_published = Path(str(PUBLISHED_CSV))
PUBLISHED = str(_published.relative_to(Path.cwd())) if _published.is_relative_to(Path.cwd()) else str(_published)

report: "../report/workflow.rst"

#: The LaTeX program of reports/report.pdf (latexmk, else pdflatex), or "none". A param of the
#: rule: installing LaTeX later reruns it. Without LaTeX the rule still runs and writes a one-page
#: placeholder PDF that says what to install, so the job graph, and DVC's outputs, are the same
#: on every machine.
LATEX = shutil.which("latexmk") or shutil.which("pdflatex") or "none"


rule stats:
    input:
        metrics=metric_files(),
        models=[f"results/models/{d}/{m}.pt" for d in DATASETS for m in TABLE1],  # the Param column
        tasks=task_metric_files(),  # Tables 2 and 3 (`conditioned: true`; workflow/rules/tasks.smk)
        convergence=convergence_files(),  # the plateau check of each Table 1 network (ddm.plateau)
    output:
        json=report("reports/metrics.json", caption="../report/metrics.rst", category="Tables"),
        csv="reports/metrics.csv",  # the metric files as one table, a row per sample set
    params:
        ddm=DDM,
        code=code_of("stats"),
        table1=TABLE1,
        ht=config["ht"],
        run=lambda wc: json.dumps({"run": config.get("run", "quick"), "replicates": config.get("replicates", 1)}),
        rows=lambda wc: TABLE_ROWS,  # the rows of Tables 4 and 5 that metrics.json records (ddm.roles)
        tasks=lambda wc, input: f"--task-metrics {' '.join(map(shlex.quote, input.tasks))}" if input.tasks else "",
    log:
        "logs/stats.log",
    conda:
        "../envs/ddm.yaml"
    shell:
        "{params.ddm} stats --inputs {input.metrics} --models {input.models} --out {output.json} --csv {output.csv}"
        " --convergence {input.convergence} {params.tasks} > {log} 2>&1"


rule report:
    input:
        metrics="reports/metrics.json",
        published=PUBLISHED,
        fig3=fig3_files(),  # Fig. 3's curves: the evidence of its claim in claims.tex
    output:
        tables=report("reports/tables.tex", caption="../report/tables.rst", category="Tables"),
        claims="reports/claims.tex",  # a verdict per claim of the paper (ddm.claims)
    params:
        ddm=DDM,
        code=code_of("report"),
    log:
        "logs/report.log",
    conda:
        "../envs/ddm.yaml"
    shell:
        "{params.ddm} report --metrics {input.metrics} --published {input.published} --out {output.tables}"
        " --claims {output.claims} --fig3 {input.fig3} > {log} 2>&1"


rule fid_plot:
    input:
        "reports/metrics.json",
    output:
        report("reports/figures/fid_vs_nfe_{dataset}.png", caption="../report/fid_vs_nfe.rst",
               category="Figures", subcategory="FID against NFE", labels={"dataset": "{dataset}"}),
    params:
        ddm=DDM,
        code=code_of("fid_plot"),
    log:
        "logs/figures/fid_vs_nfe_{dataset}.log",
    conda:
        "../envs/ddm.yaml"
    shell:
        "{params.ddm} figures --metrics {input} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"


rule sample_grid:
    input:
        # the network's own set (repeat 0; replicate k's: repeat k), its first shard if sharded
        lambda wc: sample_set_files(wc.dataset, wc.method, wc.nfe, split_replicate(wc.method)[1])[0],
    output:
        report("reports/figures/samples_{dataset}_{method}_nfe{nfe}.png", caption="../report/sample_grid.rst",
               category="Figures", subcategory="Samples",
               labels={"dataset": "{dataset}", "method": "{method}", "NFE": "{nfe}"}),
    params:
        ddm=DDM,
        code=code_of("sample_grid"),
    log:
        "logs/figures/samples_{dataset}_{method}_nfe{nfe}.log",
    conda:
        "../envs/ddm.yaml"
    shell:
        "{params.ddm} grid --samples {input} --title '{wildcards.method}, NFE {wildcards.nfe}' --out {output} > {log} 2>&1"


rule fig3_plot:
    input:
        "results/metrics/{dataset}/fig3.json",
    output:
        report("reports/figures/fig3_{dataset}.png", caption="../report/fig3.rst", category="Figures",
               subcategory="Fig. 3", labels={"dataset": "{dataset}"}),
    params:
        ddm=DDM,
        code=code_of("fig3_plot"),
    log:
        "logs/figures/fig3_{dataset}.log",
    conda:
        "../envs/ddm.yaml"
    shell:
        "{params.ddm} fig3-plot --curves {input} --out {output} > {log} 2>&1"


rule report_pdf:
    input:
        template="reports/report.tex.j2",
        tables="reports/tables.tex",
        claims="reports/claims.tex",
        metrics="reports/metrics.json",
        figures=figure_files(),
    output:
        report("reports/report.pdf", caption="../report/report_pdf.rst", category="Report"),
    params:
        ddm=DDM,
        code=code_of("report_pdf"),
        latex=shlex.quote(LATEX),
    message:  # only without LaTeX: one line saying what to install (else the usual job display)
        (None if LATEX != "none" else
         "reports/report.pdf: no pdflatex on PATH, writing a placeholder page; install LaTeX "
         "(Debian: apt-get install texlive-latex-base texlive-latex-recommended texlive-fonts-recommended)")
    log:
        "logs/report_pdf.log",
    conda:
        "../envs/ddm.yaml"
    shell:
        "{params.ddm} report-pdf --template {input.template} --tables {input.tables} --claims {input.claims}"
        " --metrics {input.metrics}"
        " --figures {input.figures} --latex {params.latex} --out {output} > {log} 2>&1"


rule convergence_plot:
    input:
        lambda wc: [f"results/convergence/{wc.dataset}/{m}.json" for m in convergence_methods(wc.dataset)],
    output:
        "reports/figures/convergence_{dataset}.png",
    params:
        ddm=DDM,
        code=code_of("convergence_plot"),
    log:
        "logs/figures/convergence_{dataset}.log",
    conda:
        "../envs/ddm.yaml"
    shell:
        "{params.ddm} convergence-plot --inputs {input} --out {output} > {log} 2>&1"


rule phase_stats:
    input:
        phase_outputs("stats"),
        verified_before_run("stats"),  # its products verified first (common.smk)


rule phase_tables:
    input:
        phase_outputs("tables"),
        verified_before_run("tables"),  # its products verified first (common.smk)
