"""cluster.yaml is validated offline by Ray's own launcher code, and checked for what the
design asks of it: GPU workers with explicit resources, token auth, no secrets."""
import re
from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def load():
    return yaml.safe_load(CLUSTER.read_text())


def test_ray_validates_cluster_yaml():
    config = prepare_config(load())
    validate_config(config)  # raises jsonschema.ValidationError on any problem
    assert config["provider"]["type"] == "aws"


def test_node_types():
    c = load()
    head = c["available_node_types"][c["head_node_type"]]
    assert head["resources"]["GPU"] == 0 and "InstanceMarketOptions" not in head["node_config"]  # on-demand CPU
    gpu_types = [n for n, t in c["available_node_types"].items() if t["resources"].get("GPU")]
    assert gpu_types and all(c["available_node_types"][n]["resources"]["GPU"] == 8 for n in gpu_types)
    for t in c["available_node_types"].values():
        assert t["node_config"]["IamInstanceProfile"]["Name"]  # S3 through the instance profile
    assert "gpu" in c["docker"]["image"] and "2.60" in c["docker"]["image"]


def test_token_auth_and_private_dashboard():
    c = load()
    head = " ".join(c["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head and "--dashboard-host=127.0.0.1" in head
    assert all("RAY_AUTH_MODE=token" in cmd for cmd in c["worker_start_ray_commands"] if "ray start" in cmd)
    assert any("pip install" in cmd and "vgrad" in cmd for cmd in c["setup_commands"])


def test_no_secrets():
    text = CLUSTER.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    for word in ("aws_secret_access_key", "aws_access_key_id", "AWS_SECRET", "RAY_AUTH_TOKEN="):
        assert word.lower() not in text.lower()
