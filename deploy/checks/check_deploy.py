"""Checks of what ships to a cluster: the Helm chart, the container image and the compose
file. Run by the Rust test `tests/tests/deploy.rs` (so by `make test`), which passes the
platform's module table in DUOVARSITY_MODULES; by hand:

    DUOVARSITY_MODULES=user,course,... python3 -m unittest deploy/checks/check_deploy.py

- The chart is linted and rendered (helm-python-sdk, Helm's own Go code, no helm binary)
  with its default values, dev mode, every opt-in block, and a production-like file;
  every rendered manifest is validated against the Kubernetes 1.31 schemas
  (kubernetes-validate), and custom resources against the fields their operators need.
- Every workload is hardened, probed and resourced; every module of the platform is a
  component of the chart; values.schema.json refuses typos and wrong types.
- The Dockerfile is parsed with BuildKit's parser (the `dockerfile` package) and held to
  hadolint's main rules; the compose file is validated against the Compose specification.
- Every alert of deploy/prometheus/rules.yml has a unit test that fires it and one that
  keeps it quiet.
"""

import json
import os
import re
import subprocess
import unittest
from pathlib import Path

import dockerfile
import helm_python
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "duovarsity"
KUBERNETES_VERSION = "1.31.0"
RELEASE, NAMESPACE = "learn", "duovarsity"

# Values files and what they stand for.
VALUE_SETS = {
    "default": {},
    "dev": yaml.safe_load((CHART / "ci" / "dev-values.yaml").read_text()),
    "all-on": yaml.safe_load((CHART / "ci" / "all-on-values.yaml").read_text()),
    "production": yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text()),
}

# Custom resources (no schema in kubernetes-validate): the fields their operators require.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ["spec.selector.matchLabels", "spec.endpoints"],
    ("monitoring.coreos.com/v1", "PrometheusRule"): ["spec.groups"],
    ("keda.sh/v1alpha1", "ScaledObject"): ["spec.scaleTargetRef.name", "spec.triggers"],
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): ["spec.parentRefs", "spec.rules"],
}

# Third-party images that cannot run with a read-only root filesystem, and why.
WRITABLE_ROOT = {
    "kafka": "the apache/kafka image renders its configuration under /opt/kafka at start",
    "pgbouncer": "the pgbouncer image renders pgbouncer.ini from the environment at start",
}


def modules():
    names = os.environ.get("DUOVARSITY_MODULES", "")
    if not names:
        raise RuntimeError("DUOVARSITY_MODULES (the module table, comma-separated) is not set")
    return names.split(",")


def render(values):
    chart = helm_python.Chart.load(str(CHART))
    return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def manifests(values):
    """Every rendered object (NOTES.txt excluded)."""
    objects = []
    for path, text in render(values).items():
        if path.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                objects.append(document)
    return objects


def dig(obj, dotted):
    for key in dotted.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def pod_specs(objects):
    """(object, pod spec) of every workload."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield obj, obj["spec"]["template"]["spec"]


def component_of(obj):
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def hook_weight(obj):
    """The hook weight of a Helm hook, or None for an ordinary resource of the release."""
    annotations = obj["metadata"].get("annotations") or {}
    if "helm.sh/hook" not in annotations:
        return None
    return int(annotations.get("helm.sh/hook-weight", "0"))


def references(pod):
    """(kind, name) of every ServiceAccount, ConfigMap and Secret a pod spec names, and
    the strings of its containers' environment (where Service host names appear)."""
    named = set()
    if pod.get("serviceAccountName"):
        named.add(("ServiceAccount", pod["serviceAccountName"]))
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            named.add(("ConfigMap", volume["configMap"]["name"]))
        if "secret" in volume:
            named.add(("Secret", volume["secret"]["secretName"]))
        for source in dig(volume, "projected.sources") or []:
            if "configMap" in source:
                named.add(("ConfigMap", source["configMap"]["name"]))
            if "secret" in source:
                named.add(("Secret", source["secret"]["name"]))
    texts = []
    for container in pod.get("initContainers", []) + pod["containers"]:
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                named.add(("ConfigMap", source["configMapRef"]["name"]))
            if "secretRef" in source:
                named.add(("Secret", source["secretRef"]["name"]))
        for variable in container.get("env", []):
            if "value" in variable:
                texts.append(str(variable["value"]))
            ref = variable.get("valueFrom") or {}
            if "configMapKeyRef" in ref:
                named.add(("ConfigMap", ref["configMapKeyRef"]["name"]))
            if "secretKeyRef" in ref:
                named.add(("Secret", ref["secretKeyRef"]["name"]))
        texts.extend(str(arg) for arg in container.get("args", []) + container.get("command", []))
    return named, texts


def module_table_gaps(modules, values, schema, compose, cluster=None, capacity=None):
    """What adding a module to the platform's table left out of the chart, the compose
    file and the scripts that run it as processes (`scripts/cluster.sh`, whose `services=(..)`
    is `cluster`, and the capacity model's `SERVICES`, `capacity`): one line per place,
    naming the module and the file to edit."""
    components = set(values.get("components", {}))
    schema_components = set(schema["properties"]["components"]["properties"])
    services = compose.get("services", {})
    gaps = []
    for module in list(modules) + ["gateway"]:
        if module not in components:
            gaps.append(f"{module}: no entry under components in helm/duovarsity/values.yaml")
        if module not in schema_components:
            gaps.append(f"{module}: no properties.components.properties.{module} in helm/duovarsity/values.schema.json")
        if services.get(module, {}).get("command") != ["serve", module]:
            gaps.append(f"{module}: no service running `serve {module}` in deploy/compose.yaml")
        if module == "gateway":
            continue
        variable = f"DUOVARSITY_{module.upper().replace('-', '_')}_SERVICE_URL"
        for name, service in services.items():
            if service.get("command", [None])[0] != "serve":
                continue
            if service.get("environment", {}).get(variable) != f"http://{module}:50051":
                gaps.append(f"{module}: {variable} is not http://{module}:50051 for {name} in deploy/compose.yaml")
                break
    # Every module has a database: one the database Secret does not reach would start on
    # an embedded SQLite file inside its pod.
    for entry in values.get("secrets", {}).get("env", []):
        listed = entry.get("components") or []
        if entry["name"].startswith("DUOVARSITY_DATABASE_") and listed:
            for module in modules:
                if module not in listed:
                    gaps.append(f"{module}: not among the components of {entry['name']} under secrets.env in helm/duovarsity/values.yaml")
    for module in modules:
        if cluster is not None and module not in cluster:
            gaps.append(f"{module}: not in services=(..) of scripts/cluster.sh")
        if capacity is not None and module not in capacity:
            gaps.append(f"{module}: not in SERVICES of scripts/capacity.py")
    for extra in sorted(components - set(modules) - {"gateway"}):
        gaps.append(f"{extra}: a component in helm/duovarsity/values.yaml that is not in the module table")
    return gaps


def install_order_violations(objects):
    """What the release's hooks use that will not exist when they run: a ServiceAccount,
    ConfigMap, Secret or Service that the release renders as an ordinary resource (created
    after pre-install hooks) or as a hook of the same or a higher weight. Names the
    release does not render come from outside it (an existingSecret) and are fine."""
    rendered = {}
    for obj in objects:
        rendered[(obj["kind"], obj["metadata"]["name"])] = hook_weight(obj)
    problems = []
    for obj, pod in pod_specs(objects):
        weight = hook_weight(obj)
        if weight is None:
            continue
        named, texts = references(pod)
        for kind, name in rendered:
            if kind == "Service" and any(name in text for text in texts):
                named.add((kind, name))
        for kind, name in sorted(named):
            if (kind, name) not in rendered:
                continue
            theirs = rendered[(kind, name)]
            if theirs is None or theirs >= weight:
                when = "an ordinary resource" if theirs is None else f"a hook of weight {theirs}"
                problems.append(f"{obj['kind']} {obj['metadata']['name']} (hook weight {weight}) "
                                f"uses {kind} {name}, {when}")
    return problems


class Chart(unittest.TestCase):
    def test_lint_is_clean_for_every_value_set(self):
        for name, values in VALUE_SETS.items():
            with self.subTest(values=name):
                report = helm_python.lint(str(CHART), values, strict=True)
                self.assertEqual(report["errors"], [], report)
                # Only informational messages (the missing icon) are allowed.
                serious = [m for m in report["messages"] if m["severity"] >= 2]
                self.assertEqual(serious, [], report)

    def test_every_manifest_validates_against_the_kubernetes_schemas(self):
        for name, values in VALUE_SETS.items():
            for obj in manifests(values):
                key = (obj["apiVersion"], obj["kind"])
                with self.subTest(values=name, kind=obj["kind"], name=obj["metadata"]["name"]):
                    if key in CUSTOM_KINDS:
                        for field in CUSTOM_KINDS[key]:
                            self.assertTrue(dig(obj, field), f"{field} missing")
                        continue
                    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)

    def test_every_workload_is_hardened_probed_and_resourced(self):
        for name, values in VALUE_SETS.items():
            for obj, pod in pod_specs(manifests(values)):
                component = component_of(obj)
                with self.subTest(values=name, workload=obj["metadata"]["name"]):
                    self.assertTrue(pod["securityContext"]["runAsNonRoot"])
                    self.assertNotEqual(pod["securityContext"].get("runAsUser"), 0)
                    self.assertEqual(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault")
                    self.assertFalse(pod.get("hostNetwork", False))
                    for container in pod["containers"]:
                        context = container["securityContext"]
                        self.assertIs(context["allowPrivilegeEscalation"], False)
                        self.assertIn("ALL", context["capabilities"]["drop"])
                        self.assertFalse(context.get("privileged", False))
                        self.assertIs(
                            context["readOnlyRootFilesystem"], component not in WRITABLE_ROOT,
                            WRITABLE_ROOT.get(component, "platform images run read-only"),
                        )
                        for kind in ("requests", "limits"):
                            for resource in ("cpu", "memory"):
                                self.assertIn(resource, container["resources"][kind])
                        if obj["kind"] != "Job":
                            self.assertIn("readinessProbe", container)
                            self.assertIn("livenessProbe", container)

    def test_platform_pods_probe_natively_and_drain_within_their_grace(self):
        objects = manifests(VALUE_SETS["production"])
        platform = set(modules()) | {"gateway"}
        seen = set()
        for obj, pod in pod_specs(objects):
            component = component_of(obj)
            if component not in platform:
                continue
            seen.add(component)
            container = pod["containers"][0]
            with self.subTest(component=component):
                self.assertEqual(container["args"], ["serve", component])
                if component == "gateway":
                    # On the admin listener, which the public port does not serve.
                    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                        self.assertEqual(container[probe]["httpGet"], {"path": path, "port": "admin"})
                else:
                    self.assertEqual(container["readinessProbe"]["grpc"], {"port": 50051})
                    self.assertEqual(
                        container["livenessProbe"]["grpc"], {"port": 50051, "service": "liveness"}
                    )
                env = {e["name"]: e for e in container["env"]}
                drain = int(env["DUOVARSITY_SHUTDOWN_GRACE_SECS"]["value"])
                pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
                self.assertGreaterEqual(pod["terminationGracePeriodSeconds"], drain + pre_stop)
                self.assertIn("checksum/config", obj["spec"]["template"]["metadata"]["annotations"])
                self.assertEqual(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name")
        self.assertEqual(seen, platform)

    def test_every_module_of_the_platform_is_a_component(self):
        values = yaml.safe_load((CHART / "values.yaml").read_text())
        self.assertEqual(set(values["components"]), set(modules()) | {"gateway"})
        schema_components = __import__("json").loads((CHART / "values.schema.json").read_text())
        self.assertEqual(
            set(schema_components["properties"]["components"]["properties"]),
            set(modules()) | {"gateway"},
        )
        objects = manifests({})
        deployments = {component_of(o) for o in objects if o["kind"] == "Deployment"}
        services = {component_of(o) for o in objects if o["kind"] == "Service"}
        for component in set(modules()) | {"gateway"}:
            self.assertIn(component, deployments)
            self.assertIn(component, services)
        config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == f"{RELEASE}-config")
        gateway = next(pod for o, pod in pod_specs(objects) if component_of(o) == "gateway")
        gateway_env = {e["name"]: e.get("value") for e in gateway["containers"][0]["env"]}
        headless = {component_of(o) for o in objects
                    if o["kind"] == "Service" and o["spec"].get("clusterIP") == "None"}
        for module in modules():
            variable = f"DUOVARSITY_{module.upper().replace('-', '_')}_SERVICE_URL"
            # Services dial the ClusterIP Service; the gateway watches its EndpointSlices
            # (or resolves the headless Service) and balances over its pods.
            self.assertEqual(config["data"][variable], f"http://{RELEASE}-{module}:50051")
            self.assertEqual(gateway_env[variable], f"kubernetes:///{RELEASE}-{module}.{NAMESPACE}:grpc")
            self.assertIn(module, headless)
        dns = manifests({"gatewayDiscovery": "dns"})
        gateway = next(pod for o, pod in pod_specs(dns) if component_of(o) == "gateway")
        gateway_env = {e["name"]: e.get("value") for e in gateway["containers"][0]["env"]}
        self.assertEqual(gateway_env["DUOVARSITY_COURSE_SERVICE_URL"], f"dns:///{RELEASE}-course-headless:50051")

    def test_values_schema_refuses_typos_and_wrong_types(self):
        for bad in (
            {"components": {"user": {"replicaz": 3}}},
            {"components": {"billing": {"enabled": True}}},
            {"default": {"replicas": "two"}},
            {"ingres": {"enabled": True}},
            {"image": {"pullPolicy": "Sometimes"}},
            {"config": {"DATABASE_URL": "postgres://x"}},
        ):
            with self.subTest(values=bad):
                self.assertNotEqual(helm_python.lint(str(CHART), bad)["errors"], [])
                with self.assertRaises(helm_python.HelmError):
                    render(bad)

    def test_secrets_come_only_from_existing_secrets(self):
        for name in ("default", "production"):
            objects = manifests(VALUE_SETS[name])
            self.assertFalse([o for o in objects if o["kind"] == "Secret"])
            for obj, pod in pod_specs(objects):
                for container in pod["containers"]:
                    for env in container.get("env", []):
                        if any(word in env["name"] for word in ("SECRET", "DATABASE_URL", "REDIS_URL", "API_KEY")):
                            self.assertIn("secretKeyRef", env.get("valueFrom", {}), env)
            config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == f"{RELEASE}-config")
            self.assertFalse([k for k in config["data"] if "SECRET" in k or k.endswith("DATABASE_URL")])
            # Each secret reaches only the components that use it; the database URL is
            # required, so a missing key stops the pod instead of falling back to SQLite.
            env = {
                component_of(o): {e["name"]: e for e in pod["containers"][0].get("env", [])}
                for o, pod in pod_specs(objects) if o["kind"] == "Deployment"
            }
            self.assertIn("DUOVARSITY_STRIPE_SECRET_KEY", env["payment"])
            self.assertNotIn("DUOVARSITY_STRIPE_SECRET_KEY", env["user"])
            self.assertNotIn("OPENAI_API_KEY", env["gateway"])
            self.assertNotIn("DUOVARSITY_DATABASE_URL", env["gateway"])
            for module in modules():
                reference = env[module]["DUOVARSITY_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
                self.assertIs(reference["optional"], False)

    def test_only_the_gateway_is_reachable_from_outside(self):
        objects = manifests({})
        policies = {component_of(o): o for o in objects if o["kind"] == "NetworkPolicy"}
        for component in set(modules()) | {"gateway"}:
            rules = policies[component]["spec"]["ingress"]
            if component == "gateway":
                self.assertNotIn("from", rules[0])
                continue
            for rule in rules:
                for peer in rule["from"]:
                    self.assertTrue("podSelector" in peer or "namespaceSelector" in peer, peer)
            self.assertEqual(
                rules[0]["from"][0]["podSelector"]["matchLabels"],
                {"app.kubernetes.io/part-of": "duovarsity", "app.kubernetes.io/instance": RELEASE},
            )

    def test_operations_surfaces_are_on_the_admin_port_for_the_monitoring_namespace_only(self):
        objects = manifests(VALUE_SETS["production"])
        config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == f"{RELEASE}-config")
        self.assertEqual(config["data"]["DUOVARSITY_ADMIN_ADDR"], "0.0.0.0:9464")
        for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
            self.assertEqual([e["port"] for e in monitor["spec"]["endpoints"]], ["admin"])
        for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
            for rule in policy["spec"]["ingress"]:
                from_monitoring = any("namespaceSelector" in peer for peer in rule.get("from", []))
                ports = [p["port"] for p in rule["ports"]]
                with self.subTest(policy=policy["metadata"]["name"], ports=ports):
                    # The monitoring namespace reaches the admin port and nothing else;
                    # nobody else is admitted to the admin port.
                    self.assertEqual(from_monitoring, ports == [9464])

    def test_the_gateway_may_watch_endpoint_slices(self):
        objects = manifests({})
        role = next(o for o in objects if o["kind"] == "Role")
        self.assertEqual(role["rules"][0]["resources"], ["endpointslices"])
        self.assertEqual(set(role["rules"][0]["verbs"]), {"get", "list", "watch"})
        binding = next(o for o in objects if o["kind"] == "RoleBinding")
        gateway = next(o for o, _ in pod_specs(objects) if component_of(o) == "gateway")
        account = gateway["spec"]["template"]["spec"]["serviceAccountName"]
        self.assertEqual(binding["subjects"][0]["name"], account)
        for obj, pod in pod_specs(objects):
            if component_of(obj) != "gateway":
                self.assertFalse(pod["automountServiceAccountToken"])

    def test_migrations_run_as_a_hook_outside_dev_mode(self):
        job = next(o for o in manifests({}) if o["kind"] == "Job")
        self.assertEqual(job["metadata"]["annotations"]["helm.sh/hook"], "pre-install,pre-upgrade")
        self.assertEqual(job["spec"]["template"]["spec"]["containers"][0]["args"], ["migrate"])
        dev = manifests(VALUE_SETS["dev"])
        self.assertFalse([o for o in dev if o["kind"] == "Job"])
        kinds = {component_of(o) for o in dev if o["kind"] == "Deployment"}
        self.assertTrue({"postgres", "redis", "kafka"} <= kinds)
        config = next(o for o in dev if o["kind"] == "ConfigMap" and o["metadata"]["name"] == f"{RELEASE}-config")
        self.assertEqual(config["data"]["DUOVARSITY_MIGRATE_ON_START"], "true")
        self.assertEqual(config["data"]["DUOVARSITY_KAFKA_BROKERS"], f"{RELEASE}-kafka:9092")

    def test_hooks_use_only_what_exists_when_they_run(self):
        for name, values in VALUE_SETS.items():
            with self.subTest(values=name):
                self.assertEqual(install_order_violations(manifests(values)), [])
        # The check itself: a hook that names the workload ServiceAccount, a release
        # ConfigMap and the release's PgBouncer is refused on every count.
        objects = manifests(VALUE_SETS["production"])
        job = next(o for o in objects if o["kind"] == "Job")
        pod = job["spec"]["template"]["spec"]
        pod["serviceAccountName"] = f"{RELEASE}-workload"
        pod["containers"][0]["envFrom"] = [{"configMapRef": {"name": f"{RELEASE}-config"}}]
        pod["containers"][0]["env"].append(
            {"name": "DUOVARSITY_DATABASE_URL", "value": f"postgres://u@{RELEASE}-pgbouncer:5432/d"})
        problems = install_order_violations(objects)
        self.assertEqual(len(problems), 3, problems)

    def test_migrations_reach_postgresql_directly(self):
        for name in ("default", "production"):
            job = next(o for o in manifests(VALUE_SETS[name]) if o["kind"] == "Job")
            env = {v["name"]: v for v in job["spec"]["template"]["spec"]["containers"][0]["env"]}
            direct = env["DUOVARSITY_MIGRATE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
            self.assertEqual(direct["key"], "migrate-database-url")
            # Through PgBouncer (production) the direct URL is required; otherwise the
            # job falls back to database-url.
            self.assertEqual(direct["optional"], name != "production")

    def test_opt_in_blocks_render_when_asked(self):
        kinds = {o["kind"] for o in manifests(VALUE_SETS["all-on"])}
        for kind in ("HorizontalPodAutoscaler", "ScaledObject", "PodDisruptionBudget", "ServiceMonitor",
                     "Ingress", "HTTPRoute", "PrometheusRule"):
            self.assertIn(kind, kinds)
        default = {o["kind"] for o in manifests({})}
        for kind in ("HorizontalPodAutoscaler", "ScaledObject", "PodDisruptionBudget", "ServiceMonitor",
                     "Ingress", "HTTPRoute", "PrometheusRule"):
            self.assertNotIn(kind, default)
        # Consumers scale on lag; the lag triggers name their group and topics.
        scaled = [o for o in manifests(VALUE_SETS["production"]) if o["kind"] == "ScaledObject"]
        self.assertEqual({component_of(o) for o in scaled}, {"course", "notification"})
        for obj in scaled:
            kafka = [t for t in obj["spec"]["triggers"] if t["type"] == "kafka"]
            self.assertTrue(kafka)
            for trigger in kafka:
                self.assertTrue(trigger["metadata"]["consumerGroup"].startswith("prod."))

    def test_a_flags_file_is_mounted_into_the_user_service_only(self):
        objects = manifests(VALUE_SETS["all-on"])
        for obj, pod in pod_specs(objects):
            if obj["kind"] == "Job":
                continue
            env = {e["name"]: e.get("value") for c in pod["containers"] for e in c.get("env", [])}
            if component_of(obj) == "user":
                self.assertEqual(env.get("DUOVARSITY_FLAGS_FILE"), "/etc/duovarsity/flags/flags.json")
                volumes = {v["name"]: v for v in pod["volumes"]}
                self.assertTrue(volumes["flags"]["configMap"]["name"].endswith("-flags"))
            else:
                self.assertNotIn("DUOVARSITY_FLAGS_FILE", env, component_of(obj))
        configmap = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-flags"))
        self.assertIn("ai-tutor", json.loads(configmap["data"]["flags.json"])["flags"])

    def test_the_chart_ships_the_rules_and_dashboards_of_deploy(self):
        objects = manifests(VALUE_SETS["production"])
        rule = next(o for o in objects if o["kind"] == "PrometheusRule")
        shipped = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
        self.assertEqual(rule["spec"]["groups"], shipped["groups"])
        dashboards = [o for o in objects if o["kind"] == "ConfigMap" and "grafana_dashboard" in o["metadata"]["labels"]]
        files = sorted(p.name for p in (ROOT / "deploy" / "grafana").glob("*.json"))
        self.assertEqual(sorted(k for o in dashboards for k in o["data"]), files)

    def test_notes_say_how_to_reach_the_gateway_and_run_grpcurl(self):
        notes = next(t for p, t in render({}).items() if p.endswith("NOTES.txt"))
        self.assertIn(f"port-forward svc/{RELEASE}-gateway 8080:80", notes)
        self.assertIn("grpcurl -plaintext 127.0.0.1:50051 list", notes)


class Image(unittest.TestCase):
    def setUp(self):
        self.commands = dockerfile.parse_file(str(ROOT / "deploy" / "Dockerfile"))
        self.stages = [c for c in self.commands if c.cmd == "FROM"]

    def test_multi_stage_with_dependencies_cached_apart_from_the_source(self):
        self.assertGreaterEqual(len(self.stages), 3)
        text = [c.original for c in self.commands]
        cook = next(i for i, line in enumerate(text) if "cargo chef cook" in line)
        copy_all = max(i for i, line in enumerate(text) if line.startswith("COPY . ."))
        build = next(i for i, line in enumerate(text) if "cargo build --release --locked" in line)
        self.assertLess(cook, copy_all, "dependencies compile before the sources are copied")
        self.assertLess(copy_all, build)
        # The distroless base has glibc and libgcc but no zlib: librdkafka's is linked in.
        for step in (cook, build):
            self.assertIn("--features static-zlib", text[step])

    def test_runtime_stage_is_minimal_non_root_and_needs_no_shell(self):
        last = len(self.commands) - self.commands[::-1].index(self.stages[-1]) - 1
        runtime = self.commands[last:]
        base = self.stages[-1].value[0]
        self.assertTrue(base.startswith("gcr.io/distroless/"), base)
        users = [c.value[0] for c in runtime if c.cmd == "USER"]
        self.assertTrue(users and users[-1].split(":")[0] not in ("0", "root"), users)
        entrypoint = next(c for c in runtime if c.cmd == "ENTRYPOINT")
        self.assertTrue(entrypoint.json, "ENTRYPOINT in exec form (no shell at run time)")
        cmd = next(c for c in runtime if c.cmd == "CMD")
        self.assertTrue(cmd.json)
        self.assertEqual(list(cmd.value[:1]), ["serve"])
        self.assertFalse([c for c in runtime if c.cmd == "RUN"], "no RUN in the runtime stage")

    def test_hadolint_rules(self):
        stage_names = {c.value[2] for c in self.stages if len(c.value) == 3}
        for command in self.commands:
            with self.subTest(line=command.original):
                if command.cmd == "FROM" and command.value[0] not in stage_names:
                    image = command.value[0]
                    # DL3006/DL3007: pinned, never latest.
                    self.assertTrue(":" in image or "${" in image, image)
                    self.assertFalse(image.endswith(":latest"), image)
                if command.cmd == "RUN" and "apt-get install" in command.value[0]:
                    self.assertIn("--no-install-recommends", command.value[0])  # DL3015
                    self.assertIn("rm -rf /var/lib/apt/lists", command.value[0])  # DL3009
                    self.assertIn("-y", command.value[0])  # DL3014
                if command.cmd == "RUN" and "cargo install" in command.value[0]:
                    self.assertIn("--locked", command.value[0])
                    self.assertIn("--version", command.value[0])
                self.assertNotEqual(command.cmd, "ADD")  # DL3020
                if command.cmd == "RUN":
                    self.assertNotIn("sudo ", command.value[0])  # DL3004

    def test_dockerignore_keeps_the_context_small(self):
        ignored = (ROOT / ".dockerignore").read_text().split()
        for entry in ("target", ".git", "data"):
            self.assertIn(entry, ignored)


class Compose(unittest.TestCase):
    def test_compose_file_follows_the_compose_specification(self):
        result = subprocess.run(
            ["check-jsonschema", "--builtin-schema", "vendor.compose-spec",
             str(ROOT / "deploy" / "compose.yaml")],
            capture_output=True, text=True, check=False,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_the_chart_and_the_compose_file_have_every_module_of_the_table(self):
        values = yaml.safe_load((CHART / "values.yaml").read_text())
        schema = __import__("json").loads((CHART / "values.schema.json").read_text())
        compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
        cluster = re.search(r"^services=\(([^)]*)\)", (ROOT / "scripts" / "cluster.sh").read_text(), re.M).group(1).split()
        capacity = re.search(r"^SERVICES = \[([^\]]*)\]", (ROOT / "scripts" / "capacity.py").read_text(), re.M).group(1)
        capacity = [name.strip().strip('"') for name in capacity.split(",")]
        gaps = module_table_gaps(modules(), values, schema, compose, cluster, capacity)
        self.assertEqual(gaps, [], "\n" + "\n".join(gaps))
        # A module added to the table alone is named, with every file it still needs.
        gaps = module_table_gaps(modules() + ["billing"], values, schema, compose, cluster, capacity)
        self.assertEqual(
            [gap.split(":")[0] for gap in gaps], ["billing"] * 8, gaps)
        self.assertTrue(any("DUOVARSITY_BILLING_SERVICE_URL" in gap for gap in gaps), gaps)
        self.assertTrue(any("DUOVARSITY_DATABASE_URL" in gap for gap in gaps), gaps)

    def test_compose_runs_every_component_on_real_backends(self):
        compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
        services = compose["services"]
        for component in modules() + ["gateway"]:
            self.assertEqual(services[component]["command"], ["serve", component])
        for backend in ("postgres", "redis", "kafka", "migrate"):
            self.assertIn(backend, services)
        environment = services["user"]["environment"]
        for module in modules():
            variable = f"DUOVARSITY_{module.upper().replace('-', '_')}_SERVICE_URL"
            self.assertEqual(environment[variable], f"http://{module}:50051")


class Rules(unittest.TestCase):
    def test_every_alert_fires_in_a_unit_test_and_stays_quiet_in_another(self):
        rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
        alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
        tests = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules_test.yml").read_text())
        fired, quiet = set(), set()
        for test in tests["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case["exp_alerts"] else quiet).add(case["alertname"])
        self.assertEqual(alerts - fired, set(), "alerts never fired by a test")
        self.assertEqual(alerts - quiet, set(), "alerts never checked quiet")


if __name__ == "__main__":
    unittest.main()
