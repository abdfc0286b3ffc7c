def evaluate_inputs(wc):
    """The run's data and model; the FeatureNet (metric fd) and the Inception weights (fid) when used."""
    inputs = {"data": f"{R}/data/{wc.dataset}.npz",
              "model": f"{R}/runs/{wc.dataset}/{wc.method}/eps{wc.epsilon}/seed{wc.seed}/model.pt"}
    evaluate = dataset_settings(config, wc.dataset)["evaluate"]
    if needs_feature_net(config, wc.dataset):
        inputs["feature_net"] = f"{R}/feature_nets/{wc.dataset}.pt"
    if "fid" in evaluate["metrics"]:
        inputs["inception"] = evaluate["inception_weights"]
    return inputs


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        f"{RUN_DIR}/metrics.csv",
    params:
        settings=lambda wc: settings(wc.dataset, "evaluate"),
        feature_net=lambda wc, input: f"--feature-net {input.feature_net}" if "feature_net" in input.keys() else "",
        batch_size=lambda wc: dataset_settings(config, wc.dataset)["train"]["batch_size"],
    log:
        f"{R}/logs/evaluate/{{dataset}}/{{method}}-eps{{epsilon}}-seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{dataset}}/{{method}}-eps{{epsilon}}-seed{{seed}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=GPU,
    shell:
        "sdfm evaluate {JOB_ARGS} --threads {threads} --data {input.data} --model {input.model} "
        "--dataset {wildcards.dataset} --method {wildcards.method} --epsilon {wildcards.epsilon} "
        "--seed {wildcards.seed} --batch-size {params.batch_size} --settings '{params.settings}' {params.feature_net} "
        "--out {output} > {log} 2>&1"
