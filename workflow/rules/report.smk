# Phase "stats" and phase "tables": mean +- std and t-tests -> reports/metrics.json ->
# reports/tables.tex and figures.


rule stats:
    input:
        metric_files(),
    output:
        "reports/metrics.json",
    params:
        ddm=DDM,
        table1=TABLE1,
        ht=config["ht"],
    log:
        "logs/stats.log",
    conda:
        "../envs/ddm.yaml"
    shell:
        "{params.ddm} stats --inputs {input} --out {output} > {log} 2>&1"


rule report:
    input:
        metrics="reports/metrics.json",
        published="workflow/published.csv",
    output:
        "reports/tables.tex",
    params:
        ddm=DDM,
    log:
        "logs/report.log",
    conda:
        "../envs/ddm.yaml"
    shell:
        "{params.ddm} report --metrics {input.metrics} --published {input.published} --out {output} > {log} 2>&1"


rule fid_plot:
    input:
        "reports/metrics.json",
    output:
        "reports/figures/fid_vs_nfe_{dataset}.png",
    params:
        ddm=DDM,
    log:
        "logs/figures/fid_vs_nfe_{dataset}.log",
    conda:
        "../envs/ddm.yaml"
    shell:
        "{params.ddm} figures --metrics {input} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"


rule sample_grid:
    input:
        "results/samples/{dataset}/{method}/nfe{nfe}-r0.pt",
    output:
        "reports/figures/samples_{dataset}_{method}_nfe{nfe}.png",
    params:
        ddm=DDM,
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
        "reports/figures/fig3_{dataset}.png",
    params:
        ddm=DDM,
    log:
        "logs/figures/fig3_{dataset}.log",
    conda:
        "../envs/ddm.yaml"
    shell:
        "{params.ddm} fig3-plot --curves {input} --out {output} > {log} 2>&1"


rule phase_stats:
    input:
        phase_outputs("stats"),


rule phase_tables:
    input:
        phase_outputs("tables"),
