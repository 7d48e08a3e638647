"""The scheduler: binds pending pods to nodes where they fit, or says why none fits.

Filters, in the order the real scheduler's plugins run them: NodeUnschedulable, TaintToleration
(NoSchedule/NoExecute), NodeAffinity (nodeSelector and required node affinity), NodeResourcesFit
(cpu, memory, ephemeral-storage, nvidia.com/gpu, pods). Scoring: the sum of matching preferred
node-affinity weights, then the least requested cpu share, then the node name. Unschedulable
pods get `PodScheduled=False, reason=Unschedulable` with the real message format and one
FailedScheduling Event per distinct message; they are retried whenever nodes or the set of pods
holding resources change. No preemption.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .util import now_rfc3339, parse_quantity

if TYPE_CHECKING:
    from . import KubeEmulator

RESOURCES = ("cpu", "memory", "ephemeral-storage", "nvidia.com/gpu")
TERMINAL = ("Succeeded", "Failed")


def pod_requests(pod: dict[str, Any]) -> dict[str, Decimal]:
    total: dict[str, Decimal] = {r: Decimal(0) for r in RESOURCES}
    for c in pod["spec"].get("containers") or []:
        requests = ((c.get("resources") or {}).get("requests")) or {}
        for r in RESOURCES:
            if r in requests:
                total[r] += parse_quantity(requests[r])
    return total


def tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    for t in tolerations:
        effect = t.get("effect")
        if effect and effect != taint.get("effect"):
            continue
        op = t.get("operator") or "Equal"
        key = t.get("key")
        if not key:
            if op == "Exists":
                return True
            continue
        if key != taint.get("key"):
            continue
        if op == "Exists" or (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _expr_matches(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        if not present:
            return False
        try:
            actual, wanted = int(labels[key]), int(values[0])
        except (ValueError, IndexError):
            return False
        return actual > wanted if op == "Gt" else actual < wanted
    return False


def term_matches(term: dict[str, Any], node: dict[str, Any]) -> bool:
    labels = node["metadata"].get("labels") or {}
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term matches no objects
    if not all(_expr_matches(e, labels) for e in exprs):
        return False
    return all(_expr_matches(f, {"metadata.name": node["metadata"]["name"]}) for f in fields)


def affinity_matches(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    labels = node["metadata"].get("labels") or {}
    for k, v in (pod["spec"].get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    aff = ((pod["spec"].get("affinity") or {}).get("nodeAffinity")) or {}
    required = aff.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required:
        terms = required.get("nodeSelectorTerms") or []
        if not any(term_matches(t, node) for t in terms):
            return False
    return True


def preference_score(pod: dict[str, Any], node: dict[str, Any]) -> int:
    aff = ((pod["spec"].get("affinity") or {}).get("nodeAffinity")) or {}
    score = 0
    for pref in aff.get("preferredDuringSchedulingIgnoredDuringExecution") or []:
        if term_matches(pref.get("preference") or {}, node):
            score += int(pref.get("weight") or 0)
    return score


def node_allocatable(node: dict[str, Any]) -> dict[str, Decimal]:
    alloc = (node.get("status") or {}).get("allocatable") or {}
    out = {r: parse_quantity(alloc.get(r, "0")) for r in RESOURCES}
    out["pods"] = parse_quantity(alloc.get("pods", "110"))
    return out


class Scheduler:
    def __init__(self, emu: KubeEmulator) -> None:
        self.emu = emu
        self._failed: dict[str, tuple[Any, str]] = {}  # pod uid -> (capacity signature, message)

    def tick(self) -> None:
        store = self.emu.store
        with store.lock:
            nodes = sorted(store.list("nodes"), key=lambda n: n["metadata"]["name"])
            pods = store.list("pods")
            used: dict[str, dict[str, Decimal]] = {
                n["metadata"]["name"]: {**{r: Decimal(0) for r in RESOURCES}, "pods": Decimal(0)}
                for n in nodes
            }
            holding = []
            pending = []
            for p in pods:
                node_name = p["spec"].get("nodeName")
                phase = (p.get("status") or {}).get("phase")
                if node_name:
                    if phase not in TERMINAL and node_name in used:
                        holding.append(p["metadata"]["uid"])
                        for r, q in pod_requests(p).items():
                            used[node_name][r] += q
                        used[node_name]["pods"] += 1
                elif phase == "Pending" and not p["metadata"].get("deletionTimestamp"):
                    pending.append(p)
            if not pending:
                self._failed.clear()
                return
            signature = (tuple(n["metadata"]["resourceVersion"] for n in nodes), frozenset(holding))
            pending.sort(key=lambda p: int(p["metadata"]["resourceVersion"]))
            live = set()
            for pod in pending:
                uid = pod["metadata"]["uid"]
                live.add(uid)
                last = self._failed.get(uid)
                if last is not None and last[0] == signature:
                    continue
                node, message = self._choose(pod, nodes, used)
                if node is not None:
                    self._failed.pop(uid, None)
                    self._bind(pod, node)
                    for r, q in pod_requests(pod).items():
                        used[node][r] += q
                    used[node]["pods"] += 1
                    holding.append(uid)
                    signature = (signature[0], frozenset(holding))
                else:
                    self._unschedulable(pod, message, last[1] if last else None)
                    self._failed[uid] = (signature, message)
            for uid in list(self._failed):
                if uid not in live:
                    del self._failed[uid]

    def _choose(
        self, pod: dict[str, Any], nodes: list[dict[str, Any]], used: dict[str, dict[str, Decimal]]
    ) -> tuple[str | None, str]:
        reasons: Counter[str] = Counter()
        fitting: list[tuple[int, Decimal, str]] = []
        requests = pod_requests(pod)
        tolerations = pod["spec"].get("tolerations") or []
        for node in nodes:
            name = node["metadata"]["name"]
            cordon = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
            if (node.get("spec") or {}).get("unschedulable") and not tolerates(tolerations, cordon):
                reasons["node(s) were unschedulable"] += 1
                continue
            bad_taint = next(
                (
                    t
                    for t in (node.get("spec") or {}).get("taints") or []
                    if t.get("effect") in ("NoSchedule", "NoExecute")
                    and not tolerates(tolerations, t)
                ),
                None,
            )
            if bad_taint is not None:
                key, value = bad_taint.get("key"), bad_taint.get("value", "")
                reasons[f"node(s) had untolerated taint {{{key}: {value}}}"] += 1
                continue
            if not affinity_matches(pod, node):
                reasons["node(s) didn't match Pod's node affinity/selector"] += 1
                continue
            alloc = node_allocatable(node)
            short = [
                r for r in RESOURCES if requests[r] > 0 and used[name][r] + requests[r] > alloc[r]
            ]
            if used[name]["pods"] + 1 > alloc["pods"]:
                short.append("pods")
            if short:
                for r in short:
                    reasons[f"Insufficient {r}" if r != "pods" else "Too many pods"] += 1
                continue
            cpu_share = (
                (used[name]["cpu"] + requests["cpu"]) / alloc["cpu"] if alloc["cpu"] else Decimal(0)
            )
            fitting.append((-preference_score(pod, node), cpu_share, name))
        if fitting:
            return min(fitting)[2], ""
        detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
        total = len(nodes)
        message = (
            f"0/{total} nodes are available: {detail}."
            if detail
            else f"0/{total} nodes are available."
        )
        message += (
            f" preemption: 0/{total} nodes are available: {total} Preemption is not "
            "helpful for scheduling."
        )
        return None, message

    def _bind(self, pod: dict[str, Any], node: str) -> None:
        store = self.emu.store
        now = now_rfc3339()

        def bind(p: dict[str, Any]) -> dict[str, Any]:
            p["spec"]["nodeName"] = node
            status = p.setdefault("status", {})
            conds = [c for c in status.get("conditions") or [] if c["type"] != "PodScheduled"]
            conds.append(
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": now,
                }
            )
            status["conditions"] = conds
            return p

        md = pod["metadata"]
        new = store.mutate("pods", md["namespace"], md["name"], bind)
        if new is not None:
            self.emu.record_event(
                new,
                "Normal",
                "Scheduled",
                f"Successfully assigned {md['namespace']}/{md['name']} to {node}",
                component="default-scheduler",
            )

    def _unschedulable(self, pod: dict[str, Any], message: str, previous: str | None) -> None:
        store = self.emu.store
        md = pod["metadata"]

        def mark(p: dict[str, Any]) -> dict[str, Any]:
            status = p.setdefault("status", {})
            conds = [c for c in status.get("conditions") or [] if c["type"] != "PodScheduled"]
            old = next(
                (c for c in status.get("conditions") or [] if c["type"] == "PodScheduled"), None
            )
            if old is not None and old.get("message") == message:
                conds.append(old)
            else:
                conds.append(
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "lastProbeTime": None,
                        "lastTransitionTime": now_rfc3339(),
                        "reason": "Unschedulable",
                        "message": message,
                    }
                )
            status["conditions"] = conds
            return p

        new = store.mutate("pods", md["namespace"], md["name"], mark)
        if new is not None and message != previous:
            self.emu.record_event(
                new, "Warning", "FailedScheduling", message, component="default-scheduler"
            )
