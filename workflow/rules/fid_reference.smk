# The Inception statistics of a data set's test split (metric fid), computed once and read by every
# evaluate job of the data set (sdfm/jobs/fid_reference.py). The file records the prepared data's hash and
# the weights file's SHA-256; evaluate jobs refuse it when either differs from theirs. Features are kept
# when kid / precision / recall need them.
def fid_reference_file(dataset):
    return f"{R}/fid_reference/{dataset}.npz"


def fid_reference_flags(dataset):
    """``--sha256 <expected>`` when the config pins the weights, ``--features`` when kid / precision / recall
    need the reference features."""
    evaluate = dataset_settings(config, dataset)["evaluate"]
    flags = f"--sha256 {shlex.quote(evaluate['inception_sha256'])} " if evaluate.get("inception_sha256") else ""
    if {"kid", "precision", "recall"} & set(evaluate["metrics"]):
        flags += "--features "
    return flags


rule fid_reference:
    input:
        data=f"{R}/data/{{dataset}}.npz",
        weights=lambda wc: dataset_settings(config, wc.dataset)["evaluate"]["inception_weights"],
    output:
        fid_reference_file("{dataset}"),
    params:
        flags=lambda wc: fid_reference_flags(wc.dataset),
    log:
        f"{R}/logs/fid_reference/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/fid_reference/{{dataset}}.tsv"
    threads: 1
    resources:
        mem_mb=rule_resource("fid_reference", "mem_mb"),
        runtime=rule_resource("fid_reference", "runtime"),
        gpu=rule_gpus("fid_reference"),
    shell:
        "sdfm fid-reference {JOB_ARGS} --threads {threads} --data {input.data:q} --dataset {wildcards.dataset} "
        "--weights {input.weights:q} {params.flags}--out {output:q} > {log:q} 2>&1"
