def evaluate_inputs(wc):
    """The run's data and model; the FeatureNet (metric fd), the Inception weights and the test split's
    Inception statistics (fid) when used."""
    inputs = {"data": f"{R}/data/{wc.dataset}.npz",
              "model": f"{R}/runs/{wc.dataset}/{wc.method}/eps{wc.epsilon}/seed{wc.seed}/model.pt"}
    evaluate = dataset_settings(config, wc.dataset)["evaluate"]
    if needs_feature_net(config, wc.dataset):
        inputs["feature_net"] = f"{R}/feature_nets/{wc.dataset}.pt"
    if "fid" in evaluate["metrics"]:
        inputs["inception"] = evaluate["inception_weights"]
        inputs["fid_reference"] = fid_reference_file(wc.dataset)
    return inputs


def input_flag(option, name):
    """A params function: ``option <input.name>`` (shell-quoted) when the job has that input, else nothing."""
    return lambda wc, input: f"{option} {shlex.quote(input[name])}" if name in input.keys() else ""


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        f"{RUN_DIR}/metrics.csv",
    params:
        settings=lambda wc: settings(wc.dataset, "evaluate"),
        feature_net=input_flag("--feature-net", "feature_net"),
        fid_reference=input_flag("--fid-reference", "fid_reference"),
        batch_size=lambda wc: dataset_settings(config, wc.dataset)["train"]["batch_size"],
    log:
        f"{R}/logs/evaluate/{{dataset}}/{{method}}-eps{{epsilon}}-seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{dataset}}/{{method}}-eps{{epsilon}}-seed{{seed}}.tsv"
    threads: 1
    resources:
        mem_mb=rule_resource("evaluate", "mem_mb"),
        runtime=rule_resource("evaluate", "runtime"),
        gpu=rule_gpus("evaluate"),
    shell:
        "sdfm evaluate {JOB_ARGS} --threads {threads} --data {input.data:q} --model {input.model:q} "
        "--dataset {wildcards.dataset} --method {wildcards.method} --epsilon {wildcards.epsilon} "
        "--seed {wildcards.seed} --batch-size {params.batch_size} --settings {params.settings:q} {params.feature_net} "
        "{params.fid_reference} "
        "--out {output:q} > {log:q} 2>&1"
