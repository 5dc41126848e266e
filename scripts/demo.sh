#!/usr/bin/env bash
# The demo: an embedded cluster (Lethe's API emulator) with the CRDs
# installed, the example manifests validated and applied with the real
# kubectl, and what kubectl shows of them. Stops the cluster on exit.
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
step kubectl get crds
step kubectl apply -f examples/
step kubectl get lethe
step kubectl get retentionpolicies
step kubectl describe legalhold fraud-investigation-2026-114

# The scrub engine on an embedded SQLite store with generated personal data.
work=$(mktemp -d)
trap 'kill $dev 2>/dev/null; wait $dev 2>/dev/null; rm -f "$kubeconfig"; rm -rf "$work"' EXIT
python3 - "$work/shop.db" <<'PY'
import sqlite3, sys, random, datetime
random.seed(7)
db = sqlite3.connect(sys.argv[1])
db.execute("CREATE TABLE tracking_events (id INTEGER PRIMARY KEY, customer_id INTEGER, device_id TEXT, recorded_at TEXT)")
db.execute("CREATE TABLE access_log (id INTEGER PRIMARY KEY, user_id INTEGER, ip TEXT, logged_at TEXT)")
now = datetime.datetime(2026, 11, 23)
for i in range(20000):
    t = now - datetime.timedelta(minutes=random.randrange(0, 2 * 365 * 24 * 60))
    db.execute("INSERT INTO tracking_events VALUES (?, ?, ?, ?)", (i, random.randrange(500), "dev-%04d" % random.randrange(2000), t.strftime("%Y-%m-%d %H:%M:%S")))
    db.execute("INSERT INTO access_log VALUES (?, ?, ?, ?)", (i, random.randrange(500), "10.0.%d.%d" % (i % 250, i % 200), t.strftime("%Y-%m-%d %H:%M:%S")))
db.commit()
PY
cat > "$work/shop.yaml" <<YAML
apiVersion: lethe.dev/v1alpha1
kind: DataStore
metadata: {name: shop}
spec: {type: sqlite, sqlite: {path: $work/shop.db}}
---
apiVersion: lethe.dev/v1alpha1
kind: Dataset
metadata: {name: tracking-events}
spec:
  storeRef: {name: shop}
  categories: [tracking, device]
  table: {name: tracking_events}
  timestamps: {created: recorded_at}
  subjectFields: {user_id: customer_id, device_id: device_id}
---
apiVersion: lethe.dev/v1alpha1
kind: RetentionPolicy
metadata: {name: tracking-13-months}
spec: {categories: [tracking], keepFor: 13mo}
---
apiVersion: lethe.dev/v1alpha1
kind: Dataset
metadata: {name: network-access-logs}
spec:
  storeRef: {name: shop}
  categories: [logs]
  table: {name: access_log}
  timestamps: {created: logged_at}
  retention: {keepFor: 90d}
---
apiVersion: lethe.dev/v1alpha1
kind: LegalHold
metadata: {name: fraud-investigation-2026-114}
spec: {reason: Fraud investigation FR-2026-114, datasets: [network-access-logs]}
YAML
count() { python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])" "$work/shop.db" "$1"; }
echo
echo "Tracking events: $(count 'SELECT count(*) FROM tracking_events') rows, $(count "SELECT count(*) FROM tracking_events WHERE recorded_at < '2025-10-23'") older than 13 months."
step "$bin" scrub --dataset tracking-events -f "$work" --at 2026-11-23T00:00:00Z --dry-run
step "$bin" scrub --dataset tracking-events -f "$work" --at 2026-11-23T00:00:00Z
echo "Tracking events now: $(count 'SELECT count(*) FROM tracking_events') rows, $(count "SELECT count(*) FROM tracking_events WHERE recorded_at < '2025-10-23'") older than 13 months."
step "$bin" scrub --dataset network-access-logs -f "$work" --at 2026-11-23T00:00:00Z || true
echo "Access log rows (held): $(count 'SELECT count(*) FROM access_log')"
echo
echo "The controllers that run such passes on schedules, erase on DeletionRequests and"
echo "write the resources' status are not built yet; see README.md, Status."
