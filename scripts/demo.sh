#!/usr/bin/env bash
# The demo: an embedded cluster (Lethe's API emulator) with the CRDs
# installed and the operator running in it; the example manifests validated
# and applied with the real kubectl; then the operator at work on a
# generated SQLite shop: a retention pass stopped by the safety brake and
# approved, a legal hold, and a deletion request with a verifiable receipt.
# Stops the cluster on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bin lethe
bin=./target/debug/lethe
[ -n "${CARGO_TARGET_DIR:-}" ] && bin="$CARGO_TARGET_DIR/debug/lethe"

kubeconfig=$(mktemp --suffix=.kubeconfig)
"$bin" dev --kubeconfig "$kubeconfig" > /tmp/lethe-demo-dev.log 2>&1 &
dev=$!
trap 'kill $dev 2>/dev/null; wait $dev 2>/dev/null; rm -f "$kubeconfig"' EXIT
for _ in $(seq 50); do [ -s "$kubeconfig" ] && break; sleep 0.1; done
export KUBECONFIG="$kubeconfig"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
step "$bin" validate -f examples/
step kubectl apply -f examples/
echo "(shop-db points at a PostgreSQL server that does not exist here: its Ready condition says so.)"
sleep 3
step kubectl get lethe

# A generated SQLite shop the operator can reach.
work=$(mktemp -d)
trap 'kill $dev 2>/dev/null; wait $dev 2>/dev/null; rm -f "$kubeconfig"; rm -rf "$work"' EXIT
python3 - "$work/shop.db" <<'PY'
import sqlite3, sys, random, datetime
random.seed(7)
db = sqlite3.connect(sys.argv[1])
db.execute("CREATE TABLE tracking_events (id INTEGER PRIMARY KEY, customer_id INTEGER, device_id TEXT, recorded_at TEXT)")
db.execute("CREATE TABLE access_log (id INTEGER PRIMARY KEY, user_id INTEGER, ip TEXT, logged_at TEXT)")
now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
for i in range(20000):
    t = now - datetime.timedelta(minutes=random.randrange(0, 2 * 365 * 24 * 60))
    db.execute("INSERT INTO tracking_events VALUES (?, ?, ?, ?)", (i, random.randrange(500), "dev-%04d" % random.randrange(2000), t.strftime("%Y-%m-%d %H:%M:%S")))
    db.execute("INSERT INTO access_log VALUES (?, ?, ?, ?)", (i, random.randrange(500), "10.0.%d.%d" % (i % 250, i % 200), t.strftime("%Y-%m-%d %H:%M:%S")))
db.commit()
PY
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: demo}
YAML
cat > "$work/shop.yaml" <<YAML
apiVersion: lethe.dev/v1alpha1
kind: DataStore
metadata: {name: shop, namespace: demo}
spec: {type: sqlite, sqlite: {path: $work/shop.db}}
---
apiVersion: lethe.dev/v1alpha1
kind: Dataset
metadata: {name: tracking-events, namespace: demo}
spec:
  storeRef: {name: shop}
  categories: [tracking, device]
  table: {name: tracking_events}
  timestamps: {created: recorded_at}
  subjectFields: {user_id: customer_id, device_id: device_id}
---
apiVersion: lethe.dev/v1alpha1
kind: RetentionPolicy
metadata: {name: tracking-13-months, namespace: demo}
spec: {categories: [tracking], keepFor: 13mo, schedule: {cron: "0 3 * * *", timeZone: Europe/Berlin}}
---
apiVersion: lethe.dev/v1alpha1
kind: Dataset
metadata: {name: network-access-logs, namespace: demo}
spec:
  storeRef: {name: shop}
  categories: [logs]
  table: {name: access_log}
  timestamps: {created: logged_at}
  subjectFields: {user_id: user_id}
  retention: {keepFor: 90d}
---
apiVersion: lethe.dev/v1alpha1
kind: LegalHold
metadata: {name: fraud-investigation-2026-114, namespace: demo}
spec: {reason: Fraud investigation FR-2026-114, datasets: [network-access-logs]}
YAML
count() { python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])" "$work/shop.db" "$1"; }
echo
echo "Tracking events: $(count 'SELECT count(*) FROM tracking_events') rows, $(count "SELECT count(*) FROM tracking_events WHERE recorded_at < datetime('now', '-13 months')") older than 13 months."
step kubectl apply -f "$work/shop.yaml"
step kubectl -n demo wait --for=condition=Ready datastores,datasets --all --timeout=60s
sleep 2
echo
echo "Half of the tracking table is past its window: more than the Dataset's 20% brake allows."
step kubectl -n demo get scrubruns
run=$(kubectl -n demo get scrubruns -l lethe.dev/dataset=tracking-events -o jsonpath='{.items[0].metadata.name}')
step kubectl -n demo get scrubrun "$run" -o jsonpath='{.status.conditions[?(@.type=="Stalled")].message}{"\n"}'
step kubectl -n demo annotate scrubrun "$run" lethe.dev/approved-by=demo-privacy-officer
step kubectl -n demo wait --for=jsonpath='{.status.phase}'=Succeeded scrubrun "$run" --timeout=60s
step kubectl -n demo get scrubruns
echo "Tracking events now: $(count 'SELECT count(*) FROM tracking_events') rows, $(count "SELECT count(*) FROM tracking_events WHERE recorded_at < datetime('now', '-13 months')") older than 13 months."
echo "Access log rows (held, nothing deleted): $(count 'SELECT count(*) FROM access_log')"
step kubectl -n demo get datasets

echo
echo "A data subject asks to be forgotten (inline identifiers: development only; use a Secret)."
echo "Customer 42 has $(count 'SELECT count(*) FROM tracking_events WHERE customer_id = 42') tracking rows and $(count 'SELECT count(*) FROM access_log WHERE user_id = 42') access-log rows."
kubectl apply -f - <<YAML
apiVersion: lethe.dev/v1alpha1
kind: DeletionRequest
metadata: {name: forget-customer-42, namespace: demo}
spec:
  subject: {identifiers: {user_id: "42"}}
  regime: GDPR
YAML
step kubectl -n demo wait --for=condition=Complete deletionrequest/forget-customer-42 --timeout=60s
step kubectl -n demo get deletionrequests
step kubectl -n demo get deletionrequest forget-customer-42 -o jsonpath='{range .status.datasets[*]}{.dataset}{": "}{.phase}{", "}{.recordsAffected}{" affected, "}{.remainingReason}{"\n"}{end}'
echo "Customer 42 now has $(count 'SELECT count(*) FROM tracking_events WHERE customer_id = 42') tracking rows (access-log rows are held: $(count 'SELECT count(*) FROM access_log WHERE user_id = 42'))."
step "$bin" report --verify forget-customer-42 -n demo
step kubectl -n demo get events --field-selector type=Warning
