#!/usr/bin/env bash
# deploy.sh: idempotent production deploy of tagrelay on Google Cloud. See "Deploy to Google Cloud" in README.md.
#
# Every resource is described first, created when absent, updated when it differs,
# and left alone otherwise, so running the script again is safe. Functions are
# redeployed only when their staged source or deploy flags changed (a fingerprint
# label on each function records what was deployed), or with --redeploy.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: ./deploy.sh --project P --region R --domain example.org [options]
       ./deploy.sh --teardown [--yes] --project P --region R --domain example.org

Deploys tagrelay: Pub/Sub topics, secrets, service accounts, Firestore, the
claim-check bucket, the ingest, relay and events Cloud Functions, the dead-letter
policy, the Mailgun route and event webhooks, and the alert (a log-based metric
and an alert policy that emails --alert-email). Safe to run again: it only
creates what is missing and updates what differs.

Settings (a flag wins over the environment):
  --project P       TAGRELAY_PROJECT, else GOOGLE_CLOUD_PROJECT, else CLOUDSDK_CORE_PROJECT
  --region R        TAGRELAY_REGION, else GOOGLE_CLOUD_REGION (e.g. europe-west1)
  --domain D        TAGRELAY_DOMAIN, else MAILGUN_DOMAIN (the Mailgun domain, e.g. example.org)
  --routes FILE     TAGRELAY_ROUTES_FILE, else routes.toml in the clone (copy routes.example.toml)
  --firestore-location L
                    TAGRELAY_FIRESTORE_LOCATION, else the region (used only when creating)
  --eu              use Mailgun's EU API (https://api.eu.mailgun.net); otherwise
                    MAILGUN_API_BASE, else https://api.mailgun.net
  --build-dir DIR   TAGRELAY_BUILD_DIR, else build/ in the clone (staged function sources)
  --alert-email A   TAGRELAY_ALERT_EMAIL: who is emailed when a message is dead-lettered
                    or a forward target is suppressed by Mailgun. Without it the log-based
                    metric is still made, but no notification channel or alert policy.

Secrets (environment only, never flags; prompted without echo when missing and needed):
  MAILGUN_API_KEY               stored as secret tagrelay-mailgun-api-key
  MAILGUN_WEBHOOK_SIGNING_KEY   stored as secret tagrelay-webhook-signing-key
  TAGRELAY_REPLY_KEY            stored as secret tagrelay-reply-key (signs reply addresses);
                                created with a random value when absent, never asked for
  A secret that exists is kept unless the variable is set to a different value,
  which adds a new version (key rotation). While rotating the reply key, set
  TAGRELAY_REPLY_KEY_PREVIOUS_VERSION to the old version number: addresses made under
  it keep working until a deploy without it.
  The route key (secret tagrelay-route-key) is generated here: 32 random bytes,
  url-safe, created once. It travels in the Mailgun route URL as ?k=, and ingest
  refuses posts without it. --rotate-route-key makes a new one; ingest accepts
  the previous one too until the next rotation.

Modes:
  --dry-run         print every command it would run (lookups included, resources
                    assumed absent) and run none
  --redeploy        deploy both functions even when their fingerprint is unchanged
  --rotate-route-key
                    add a new route key version, redeploy ingest accepting the new
                    and the previous key, then point the Mailgun route at the new one
  --teardown        delete what this script creates (asks first); the Firestore
                    database and enabled APIs are kept (the webhooks, metric, alert
                    policy and its email channel go too)
  --yes             do not ask before --teardown
  -h, --help        this text

Other environment: PYTHON (interpreter with tagrelay's requirements; default
.venv/bin/python, else python3), TAGRELAY_CLAIM_BUCKET (default P-tagrelay-claims).
EOF
}

die() {
	printf 'deploy.sh: %s\n' "$*" >&2
	exit 2
}

# ---------------------------------------------------------------- settings ---

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROJECT=${TAGRELAY_PROJECT:-${GOOGLE_CLOUD_PROJECT:-${CLOUDSDK_CORE_PROJECT:-}}}
REGION=${TAGRELAY_REGION:-${GOOGLE_CLOUD_REGION:-}}
DOMAIN=${TAGRELAY_DOMAIN:-${MAILGUN_DOMAIN:-}}
ROUTES_FILE=${TAGRELAY_ROUTES_FILE:-}
FIRESTORE_LOCATION=${TAGRELAY_FIRESTORE_LOCATION:-}
BUILD_DIR=${TAGRELAY_BUILD_DIR:-}
MAILGUN_BASE=${MAILGUN_API_BASE:-https://api.mailgun.net}
DRY_RUN=0
TEARDOWN=0
ASSUME_YES=0
REDEPLOY=0
ROTATE_ROUTE_KEY=0
ALERT_EMAIL=${TAGRELAY_ALERT_EMAIL:-}

need_value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
	case $1 in
	--project) need_value "$@" && PROJECT=$2 && shift ;;
	--project=*) PROJECT=${1#*=} ;;
	--region) need_value "$@" && REGION=$2 && shift ;;
	--region=*) REGION=${1#*=} ;;
	--domain) need_value "$@" && DOMAIN=$2 && shift ;;
	--domain=*) DOMAIN=${1#*=} ;;
	--routes) need_value "$@" && ROUTES_FILE=$2 && shift ;;
	--routes=*) ROUTES_FILE=${1#*=} ;;
	--firestore-location) need_value "$@" && FIRESTORE_LOCATION=$2 && shift ;;
	--firestore-location=*) FIRESTORE_LOCATION=${1#*=} ;;
	--build-dir) need_value "$@" && BUILD_DIR=$2 && shift ;;
	--build-dir=*) BUILD_DIR=${1#*=} ;;
	--alert-email) need_value "$@" && ALERT_EMAIL=$2 && shift ;;
	--alert-email=*) ALERT_EMAIL=${1#*=} ;;
	--eu) MAILGUN_BASE=https://api.eu.mailgun.net ;;
	--dry-run) DRY_RUN=1 ;;
	--redeploy) REDEPLOY=1 ;;
	--rotate-route-key) ROTATE_ROUTE_KEY=1 ;;
	--teardown) TEARDOWN=1 ;;
	--yes | -y) ASSUME_YES=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
	shift
done

[[ -n $PROJECT ]] || die "no project: pass --project P or set TAGRELAY_PROJECT"
[[ -n $REGION ]] || die "no region: pass --region R (e.g. europe-west1) or set TAGRELAY_REGION"
[[ -n $DOMAIN ]] || die "no domain: pass --domain example.org or set TAGRELAY_DOMAIN"
[[ $PROJECT =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] || die "--project '$PROJECT' is not a project id (lowercase letters, digits, hyphens)"
[[ $REGION =~ ^[a-z]+-[a-z]+[0-9]+$ ]] || die "--region '$REGION' is not a region like europe-west1"
[[ $DOMAIN =~ ^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}$ ]] || die "--domain '$DOMAIN' is not a domain name"
[[ $MAILGUN_BASE =~ ^https?://[^/]+/?$ ]] || die "MAILGUN_API_BASE '$MAILGUN_BASE' is not a base URL like https://api.mailgun.net"
[[ -z $ALERT_EMAIL || $ALERT_EMAIL =~ ^[A-Za-z0-9._%+-]+@([A-Za-z0-9-]+\.)+[A-Za-z]{2,}$ ]] || die "--alert-email '$ALERT_EMAIL' is not an email address"
FIRESTORE_LOCATION=${FIRESTORE_LOCATION:-$REGION}
DOMAIN=${DOMAIN,,}

# Paths given by the user are relative to where they ran the script; defaults to the clone.
absolute() { case $1 in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac }
ROUTES_FILE=$(absolute "${ROUTES_FILE:-$ROOT/routes.toml}")
BUILD_DIR=$(absolute "${BUILD_DIR:-$ROOT/build}")
cd "$ROOT"
if [[ -z ${PYTHON:-} ]]; then
	if [[ -x $ROOT/.venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
export CLOUDSDK_CORE_DISABLE_PROMPTS=1 # gcloud never waits for an answer; this script asks its own questions

# Names: fixed so that a second run finds what the first one made.
TOPIC=tagrelay-inbound
DL_TOPIC=tagrelay-deadletter
DL_HOLD=tagrelay-deadletter-hold
SECRET_API=tagrelay-mailgun-api-key
SECRET_SIGNING=tagrelay-webhook-signing-key
SECRET_REPLY=tagrelay-reply-key
SECRET_ROUTE=tagrelay-route-key
INGEST=tagrelay-ingest
RELAY=tagrelay-relay
EVENTS=tagrelay-events
INGEST_SA=tagrelay-ingest@$PROJECT.iam.gserviceaccount.com
RELAY_SA=tagrelay-relay@$PROJECT.iam.gserviceaccount.com
EVENTS_SA=tagrelay-events@$PROJECT.iam.gserviceaccount.com
BUCKET=${TAGRELAY_CLAIM_BUCKET:-$PROJECT-tagrelay-claims}
TTL_FIELD=expires_at
TTL_GROUPS=(tagrelay_tokens tagrelay_deliveries tagrelay_refusals tagrelay_event_tokens tagrelay_alias_leaks)
APIS=(cloudfunctions run cloudbuild eventarc pubsub secretmanager firestore artifactregistry storage logging monitoring)

# The events function (issue 12) receives Mailgun's event webhooks: it verifies them with the
# webhook signing key, records single-use event tokens and delivery states in Firestore, and
# for a permanent failure reads the kept original from the claim-check bucket (and deletes it),
# publishes it to the dead-letter topic, and sends the route's owner notice through Mailgun.
# Its own service account gets exactly that, and nothing else (keep docs/deploy.md in step):
#   roles/datastore.user                  project (Firestore has no narrower grant)
#   roles/pubsub.publisher                topic tagrelay-deadletter only
#   roles/secretmanager.secretAccessor    secrets tagrelay-webhook-signing-key and tagrelay-mailgun-api-key only
#   roles/storage.objectAdmin             the claim-check bucket only
# The alert: a log-based metric counting the ERROR lines of a dead letter (the relay's, outcome
# "dead-lettered"; the events function's for a permanent failure, outcome "failed") or of a
# suppressed forward target (events, outcome "suppressed"), and an alert policy on it that emails
# --alert-email through a notification channel.
METRIC=tagrelay_undeliverable
METRIC_FILTER='resource.type="cloud_run_revision" AND resource.labels.service_name=("tagrelay-relay" OR "tagrelay-events") AND severity>=ERROR AND jsonPayload.outcome=("dead-lettered" OR "failed" OR "suppressed")'
POLICY_NAME='tagrelay: mail dead-lettered or a forward target suppressed'
CHANNEL_NAME='tagrelay alerts'
P=(--project="$PROJECT")

# ------------------------------------------------------------------ output ---

exec 3>&1 # commands and notes go to fd 3, so $(look ...) captures only gcloud's answer

# shell-quote a command for display
quoted() {
	local out="" arg
	for arg in "$@"; do
		if [[ $arg =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then out+="$arg "; else out+="'${arg//\'/\'\\\'\'}' "; fi
	done
	printf '%s' "${out% }"
}

note() { printf '  %s\n' "$*" >&3; }
step() { printf '\n== %s\n' "$*" >&3; }

# run CMD...: a change. Printed, then run unless --dry-run.
run() {
	printf '+ %s\n' "$(quoted "$@")" >&3
	[[ $DRY_RUN == 1 ]] && return 0
	"$@"
}

# look CMD...: a read-only lookup; prints its answer, fails when the resource is absent.
# Under --dry-run it is printed, not run, and reports "absent".
look() {
	if [[ $DRY_RUN == 1 ]]; then
		printf '+ %s    # dry run: assumed absent\n' "$(quoted "$@")" >&3
		return 1
	fi
	"$@" 2>/dev/null
}

# Retry a change a few times: IAM takes a few seconds to see a new service account.
run_retry() {
	local attempt
	for attempt in 1 2 3 4 5; do
		if run "$@"; then return 0; fi
		[[ $attempt == 5 ]] && return 1
		note "retrying in $((attempt * 3))s (new service accounts take a moment to appear)"
		sleep $((attempt * 3))
	done
}

# Helpers that need only the standard library run isolated (-I -S): faster, and no site hooks.
py_stdlib() { "$PYTHON" -I -S "$@"; }

# IAM policies are read as "role<TAB>member" lines (one per member), so checks need no JSON parser.
IAM_ROWS=(--flatten='bindings[].members' --format='value(bindings.role,bindings.members)')

has_binding() { # stdin: IAM_ROWS output; $1 member, $2 role
	grep -qxF "$2"$'\t'"$1"
}

# ------------------------------------------------------------- resources ---

ensure_apis() {
	step "APIs"
	local enabled missing=() api
	enabled=$(look gcloud services list --enabled "${P[@]}" --format='value(config.name)') || enabled=""
	for api in "${APIS[@]}"; do
		if grep -qFx "$api.googleapis.com" <<<"$enabled"; then note "$api.googleapis.com: enabled"; else missing+=("$api.googleapis.com"); fi
	done
	if [[ ${#missing[@]} -gt 0 ]]; then run gcloud services enable "${missing[@]}" "${P[@]}"; fi
}

ensure_topic() {
	if look gcloud pubsub topics describe "$1" "${P[@]}" --format='value(name)' >/dev/null; then
		note "topic $1: exists"
	else
		run gcloud pubsub topics create "$1" "${P[@]}"
	fi
}

ensure_hold_subscription() {
	# A pull subscription nobody pulls from: dead letters wait here (7 days) to be read.
	local desc topic ttl
	if desc=$(look gcloud pubsub subscriptions describe "$DL_HOLD" "${P[@]}" --format='value(topic,expirationPolicy.ttl)'); then
		IFS=$'\t' read -r topic ttl <<<"$desc"
		[[ $topic == */topics/"$DL_TOPIC" ]] ||
			die "subscription $DL_HOLD exists but reads $topic, not $DL_TOPIC: delete it and run again"
		if [[ -z $ttl ]]; then
			note "subscription $DL_HOLD: exists, never expires"
		else
			run gcloud pubsub subscriptions update "$DL_HOLD" --expiration-period=never --message-retention-duration=7d "${P[@]}"
		fi
	else
		run gcloud pubsub subscriptions create "$DL_HOLD" --topic="$DL_TOPIC" --ack-deadline=60 \
			--message-retention-duration=7d --expiration-period=never "${P[@]}"
	fi
}

# ask_secret VAR PROMPT: make sure $VAR holds a value, prompting without echo if needed.
ask_secret() {
	local var=$1 prompt=$2 value
	[[ -n ${!var:-} ]] && return 0
	[[ -t 0 ]] || die "$var is not set and there is no terminal to ask: export $var (read from the environment, never from arguments)"
	read -r -s -p "$prompt (input hidden): " value
	printf '\n' >&2
	[[ -n $value ]] || die "$var: empty value"
	printf -v "$var" '%s' "$value"
}

# add_secret_version NAME VAR: the value travels on stdin, never in argv, never printed.
add_secret_version() {
	local name=$1 var=$2
	printf '+ printf %%s "$%s" | %s\n' "$var" "$(quoted gcloud secrets versions add "$name" --data-file=- "${P[@]}" --format=none)" >&3
	[[ $DRY_RUN == 1 ]] && return 0
	printf %s "${!var}" | gcloud secrets versions add "$name" --data-file=- "${P[@]}" --format=none
}

# ensure_secret NAME VAR PROMPT
#   exists with a version: kept, or a version added when $VAR is set to another value;
#   when $VAR is unset it is filled from the secret, for the steps that need the key.
ensure_secret() {
	local name=$1 var=$2 prompt=$3 current
	if current=$(look gcloud secrets versions access latest --secret="$name" "${P[@]}"); then
		if [[ -z ${!var:-} ]]; then
			note "secret $name: exists (kept; set $var to replace it)"
			printf -v "$var" '%s' "$current"
		elif [[ $current == "${!var}" ]]; then
			note "secret $name: exists, same value"
		else
			note "secret $name: $var differs from the latest version; adding a version"
			add_secret_version "$name" "$var"
		fi
	elif look gcloud secrets describe "$name" "${P[@]}" --format='value(name)' >/dev/null; then
		if [[ -n $(look gcloud secrets versions list "$name" --filter=state:ENABLED --limit=1 "${P[@]}" --format='value(name)') ]]; then
			# Reading a value needs roles/secretmanager.secretAccessor, which Editor lacks: keep what is there.
			note "secret $name: exists, but its value cannot be read with your account to compare; kept"
		else
			note "secret $name: exists without an enabled version"
			ask_secret "$var" "$prompt"
			add_secret_version "$name" "$var"
		fi
	else
		[[ $DRY_RUN == 1 ]] || ask_secret "$var" "$prompt"
		run gcloud secrets create "$name" --replication-policy=automatic --labels=app=tagrelay "${P[@]}"
		add_secret_version "$name" "$var"
	fi
}

# new_route_key VAR: 32 random bytes, url-safe (43 characters), into $VAR; never printed.
new_route_key() {
	printf -v "$1" '%s' "$(py_stdlib -c 'import secrets; print(secrets.token_urlsafe(32))')"
}

# secret_version_number NAME: the number of NAME's newest enabled version (gcloud lists the newest first).
secret_version_number() {
	local name
	name=$(look gcloud secrets versions list "$1" --filter=state:ENABLED --limit=1 "${P[@]}" --format='value(name)') || return 1
	[[ -n $name ]] || return 1
	printf '%s' "${name##*/}"
}

# ensure_route_key: the route key secret exists (generated, never asked for) and TAGRELAY_ROUTE_KEY
# holds its newest value for the Mailgun route. Sets ROUTE_KEY_VERSION (pinned: an instance keeps
# its key until ingest is redeployed) and ROUTE_KEY_PREVIOUS_VERSION (the one before, accepted
# during a rotation; empty when there is none).
ensure_route_key() {
	local name=$SECRET_ROUTE current number
	ROUTE_KEY_PREVIOUS_VERSION=""
	if current=$(look gcloud secrets versions access latest --secret="$name" "${P[@]}"); then
		number=$(secret_version_number "$name") || die "cannot list the versions of secret $name"
		if [[ $ROTATE_ROUTE_KEY == 1 ]]; then
			note "secret $name: rotating; version $number stays accepted by ingest"
			new_route_key TAGRELAY_ROUTE_KEY
			add_secret_version "$name" TAGRELAY_ROUTE_KEY
			number=$(secret_version_number "$name") || die "cannot list the versions of secret $name"
		else
			note "secret $name: exists (kept; --rotate-route-key replaces it)"
			TAGRELAY_ROUTE_KEY=$current
		fi
		if ((number > 1)); then ROUTE_KEY_PREVIOUS_VERSION=$((number - 1)); fi
		ROUTE_KEY_VERSION=$number
	elif look gcloud secrets describe "$name" "${P[@]}" --format='value(name)' >/dev/null; then
		die "secret $name exists but its value cannot be read with your account, and the Mailgun route needs it: grant yourself roles/secretmanager.secretAccessor on it, or delete it to make a new key"
	else
		run gcloud secrets create "$name" --replication-policy=automatic --labels=app=tagrelay "${P[@]}"
		new_route_key TAGRELAY_ROUTE_KEY
		add_secret_version "$name" TAGRELAY_ROUTE_KEY
		ROUTE_KEY_VERSION=1
	fi
}

ensure_service_account() { # ID DISPLAY-NAME
	local email=$1@$PROJECT.iam.gserviceaccount.com
	if look gcloud iam service-accounts describe "$email" "${P[@]}" --format='value(email)' >/dev/null; then
		note "service account $email: exists"
	else
		run gcloud iam service-accounts create "$1" --display-name="$2" "${P[@]}"
	fi
}

# ensure_binding GROUP RESOURCE MEMBER ROLE [FLAG...]
#   GROUP is the gcloud command group holding the resource: "pubsub topics", "secrets",
#   "projects", "storage buckets", "pubsub subscriptions", "run services".
ensure_binding() {
	local group=$1 resource=$2 member=$3 role=$4 policy=""
	shift 4
	local -a words add_flags=()
	local cache_key="$group $resource $*"
	read -r -a words <<<"$group"
	[[ $group == projects ]] && add_flags=(--condition=None)
	if [[ -n ${POLICIES[$cache_key]:-} ]]; then
		policy=${POLICIES[$cache_key]}
	elif policy=$(look gcloud "${words[@]}" get-iam-policy "$resource" "$@" "${P[@]}" "${IAM_ROWS[@]}"); then
		POLICIES[$cache_key]=${policy:-none}
	fi
	if has_binding "$member" "$role" <<<"$policy"; then
		note "$role for ${member#*:} on $resource: granted"
		return 0
	fi
	unset 'POLICIES[$cache_key]'
	run_retry gcloud "${words[@]}" add-iam-policy-binding "$resource" "$@" --member="$member" --role="$role" \
		"${add_flags[@]}" "${P[@]}" --format=none
}
declare -A POLICIES=() # IAM policies read during this run, by resource; dropped when changed

ensure_firestore() {
	step "Firestore (ledger) and its TTL policy"
	local type names group
	if type=$(look gcloud firestore databases describe --database='(default)' "${P[@]}" --format='value(type)'); then
		[[ $type == FIRESTORE_NATIVE ]] ||
			die "the (default) Firestore database of $PROJECT is in $type; tagrelay's ledger needs Native mode (see Troubleshooting in README.md)"
		note "database (default): exists, native mode"
	else
		run gcloud firestore databases create --database='(default)' --location="$FIRESTORE_LOCATION" --type=firestore-native "${P[@]}"
	fi
	for group in "${TTL_GROUPS[@]}"; do
		names=$(look gcloud firestore fields ttls list --collection-group="$group" "${P[@]}" --format='value(name)') || names=""
		if grep -qE "(^|/)$TTL_FIELD\$" <<<"$names"; then
			note "TTL on $group.$TTL_FIELD: set"
		else
			run gcloud firestore fields ttls update "$TTL_FIELD" --collection-group="$group" --enable-ttl --async "${P[@]}"
		fi
	done
}

LIFECYCLE_JSON='{"rule": [{"action": {"type": "Delete"}, "condition": {"age": 7}}]}'

ensure_bucket() {
	step "Claim-check bucket gs://$BUCKET"
	local desc lifecycle_file
	lifecycle_file=$WORK/lifecycle.json
	printf '%s\n' "$LIFECYCLE_JSON" >"$lifecycle_file"
	note "lifecycle rule: $LIFECYCLE_JSON"
	if desc=$(look gcloud storage buckets describe "gs://$BUCKET" "${P[@]}" --format=json); then
		if py_stdlib -c '
import json, sys
bucket, wanted = json.load(sys.stdin), json.loads(sys.argv[1])
config = bucket.get("lifecycle_config") or bucket.get("lifecycle") or {}
sys.exit(0 if config.get("rule") == wanted["rule"] else 1)
' "$LIFECYCLE_JSON" <<<"$desc"; then
			note "bucket gs://$BUCKET: exists, objects deleted after 7 days"
		else
			run gcloud storage buckets update "gs://$BUCKET" --lifecycle-file="$lifecycle_file" "${P[@]}"
		fi
	else
		run gcloud storage buckets create "gs://$BUCKET" --location="$REGION" --uniform-bucket-level-access \
			--public-access-prevention --lifecycle-file="$lifecycle_file" "${P[@]}"
	fi
}

# ------------------------------------------------------------- functions ---

# runtime_files: what a function ships of this repository besides its entry point: the runtime package's
# Python sources (tagrelay/**/*.py), sorted. Never the tooling (tagrelay_tools), tests, bench or caches.
runtime_files() {
	find -L tagrelay -type d -name __pycache__ -prune -o -type f -name '*.py' -print | LC_ALL=C sort
}

# stage FUNCTION: build/<function>/ = main.py + requirements.txt + routes.toml + runtime_files
# (gcloud uploads one folder and drops symlinks, so everything is copied).
stage() {
	local fn=$1 dir=$BUILD_DIR/$1 file
	local -a files
	mapfile -t files < <(runtime_files)
	run rm -rf "$dir"
	run mkdir -p "$dir"
	run cp "functions/$fn/main.py" "$dir/main.py"
	run cp requirements.txt "$dir/requirements.txt"
	run cp "$ROUTES_FILE" "$dir/routes.toml"
	printf '+ cp <the %d files of tagrelay/**/*.py> %s/tagrelay/\n' "${#files[@]}" "$dir" >&3
	[[ $DRY_RUN == 1 ]] && return 0
	for file in "${files[@]}"; do
		mkdir -p "$dir/${file%/*}"
		cp "$file" "$dir/$file"
	done
}

# fingerprint FUNCTION ARG...: a hash of exactly what stage() puts in FUNCTION's folder (names and bytes)
# and of its deploy arguments; editing tooling, tests or docs leaves it unchanged.
fingerprint() {
	local fn=$1
	shift
	local -a files
	mapfile -t files < <(runtime_files)
	py_stdlib - "functions/$fn/main.py" "$ROUTES_FILE" "${#files[@]}" "${files[@]}" "$@" <<'PY'
import hashlib, pathlib, sys
main, routes, count, *rest = sys.argv[1:]
files, args = rest[: int(count)], rest[int(count) :]
staged = {"main.py": main, "requirements.txt": "requirements.txt", "routes.toml": routes}
staged.update((name, name) for name in files)
digest = hashlib.sha256()
for name, source in sorted(staged.items()):
    digest.update(name.encode() + b"\0" + pathlib.Path(source).read_bytes() + b"\0")
digest.update("\0".join(args).encode())
print(digest.hexdigest()[:32])
PY
}

# deploy_function NAME SOURCE-FUNCTION ARG...: deploy unless the live function has this fingerprint.
deploy_function() {
	local name=$1 fn=$2 live state fp want
	shift 2
	want=$(fingerprint "$fn" "$@")
	if live=$(look gcloud functions describe "$name" --gen2 --region="$REGION" "${P[@]}" --format='value(state,labels.tagrelay_fp)'); then
		state=${live%%$'\t'*}
		fp=${live#*$'\t'}
		if [[ $REDEPLOY == 0 && $state == ACTIVE && $fp == "$want" ]]; then
			note "function $name: active, source and settings unchanged (--redeploy forces a deploy)"
			return 0
		fi
		note "function $name: $state, deploying the current source"
	fi
	stage "$fn"
	run gcloud functions deploy "$name" --gen2 --region="$REGION" --runtime=python312 \
		--source="$BUILD_DIR/$fn" "$@" --update-labels="app=tagrelay,tagrelay_fp=$want" "${P[@]}" --format=none
}

function_field() { # NAME FIELD
	look gcloud functions describe "$1" --gen2 --region="$REGION" "${P[@]}" --format="value($2)"
}

secret_version() { printf 'projects/%s/secrets/%s/versions/%s' "$PROJECT" "$1" "${2:-latest}"; }

# The route key variables for ingest: the current version, and the previous one during a rotation.
route_key_env() {
	printf 'TAGRELAY_ROUTE_KEY_SECRET=%s' "$(secret_version "$SECRET_ROUTE" "$ROUTE_KEY_VERSION")"
	if [[ -n $ROUTE_KEY_PREVIOUS_VERSION ]]; then
		printf ',TAGRELAY_ROUTE_KEY_PREVIOUS_SECRET=%s' "$(secret_version "$SECRET_ROUTE" "$ROUTE_KEY_PREVIOUS_VERSION")"
	fi
}

# ------------------------------------------------ reply as the alias (issue 13) ---
# The reply key signs reverse addresses. It is created once with a random value (never
# asked for, never printed) and kept; rotating it (TAGRELAY_REPLY_KEY set to a new value)
# adds a version, and TAGRELAY_REPLY_KEY_PREVIOUS_VERSION keeps the old one valid.
ensure_reply_key() {
	local previous=${TAGRELAY_REPLY_KEY_PREVIOUS_VERSION:-}
	[[ -z $previous || $previous =~ ^[0-9]+$ ]] || die "TAGRELAY_REPLY_KEY_PREVIOUS_VERSION '$previous' is not a version number"
	if [[ -z ${TAGRELAY_REPLY_KEY:-} ]] &&
		[[ -z $(look gcloud secrets versions list "$SECRET_REPLY" --filter=state:ENABLED --limit=1 "${P[@]}" --format='value(name)') ]]; then
		TAGRELAY_REPLY_KEY=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(32))')
	fi
	ensure_secret "$SECRET_REPLY" TAGRELAY_REPLY_KEY "reply key"
}

reply_env() { # appended to both functions' --set-env-vars
	printf ',TAGRELAY_REPLY_KEY_SECRET=%s' "$(secret_version "$SECRET_REPLY")"
	local previous=${TAGRELAY_REPLY_KEY_PREVIOUS_VERSION:-}
	if [[ -n $previous ]]; then # checked by ensure_reply_key: a die here would end only the $(...)
		printf ',TAGRELAY_REPLY_KEY_PREVIOUS_SECRET=projects/%s/secrets/%s/versions/%s' "$PROJECT" "$SECRET_REPLY" "$previous"
	fi
}

deploy_functions() {
	step "Functions"
	# ingest: public HTTP endpoint for Mailgun; a 25 MB message arrives form-encoded and is
	# held a few times over while it is parsed and published, hence 512Mi for 8 at a time.
	deploy_function "$INGEST" ingest \
		--entry-point=ingest --trigger-http --allow-unauthenticated \
		--memory=512Mi --cpu=1 --concurrency=8 --timeout=60s --max-instances=10 \
		--service-account="$INGEST_SA" \
		--set-env-vars="GOOGLE_CLOUD_PROJECT=$PROJECT,TAGRELAY_TOPIC=$TOPIC,TAGRELAY_ROUTES=routes.toml,MAILGUN_WEBHOOK_SIGNING_KEY_SECRET=$(secret_version "$SECRET_SIGNING"),TAGRELAY_CLAIM_BUCKET=$BUCKET,$(route_key_env)$(reply_env)"
	# The relay's leak notices carry one-click block links served by ingest (routes with block_link).
	local public_env=""
	local ingest_url
	if ingest_url=$(function_field "$INGEST" url) && [[ -n $ingest_url ]]; then
		public_env=",TAGRELAY_PUBLIC_URL=${ingest_url%/}"
	fi
	# relay: invoked only by its Eventarc trigger (authenticated as its own service account).
	deploy_function "$RELAY" relay \
		--entry-point=relay --trigger-topic="$TOPIC" --retry --no-allow-unauthenticated \
		--trigger-service-account="$RELAY_SA" \
		--memory=512Mi --timeout=300s --max-instances=10 \
		--service-account="$RELAY_SA" \
		--set-env-vars="GOOGLE_CLOUD_PROJECT=$PROJECT,TAGRELAY_ROUTES=routes.toml,MAILGUN_DOMAIN=$DOMAIN,MAILGUN_API_BASE=${MAILGUN_BASE%/},MAILGUN_API_KEY_SECRET=$(secret_version "$SECRET_API"),TAGRELAY_DEADLETTER_TOPIC=$DL_TOPIC,TAGRELAY_CLAIM_BUCKET=$BUCKET$public_env$(reply_env)"
	# The trigger authenticates as the relay's service account: it may invoke the relay, nothing else.
	ensure_binding "run services" "$RELAY" "serviceAccount:$RELAY_SA" roles/run.invoker --region="$REGION"
	# events: public HTTP endpoint for Mailgun's event webhooks (each post is signed and checked).
	deploy_function "$EVENTS" events \
		--entry-point=events --trigger-http --allow-unauthenticated \
		--memory=512Mi --cpu=1 --concurrency=8 --timeout=60s --max-instances=10 \
		--service-account="$EVENTS_SA" \
		--set-env-vars="GOOGLE_CLOUD_PROJECT=$PROJECT,TAGRELAY_ROUTES=routes.toml,MAILGUN_DOMAIN=$DOMAIN,MAILGUN_API_BASE=${MAILGUN_BASE%/},MAILGUN_API_KEY_SECRET=$(secret_version "$SECRET_API"),MAILGUN_WEBHOOK_SIGNING_KEY_SECRET=$(secret_version "$SECRET_SIGNING"),TAGRELAY_DEADLETTER_TOPIC=$DL_TOPIC,TAGRELAY_CLAIM_BUCKET=$BUCKET"
}

ensure_trigger_subscription() {
	step "Retry and dead-letter policy on the relay's trigger subscription"
	local trigger subscription desc
	if trigger=$(function_field "$RELAY" eventTrigger.trigger) && [[ -n $trigger ]] &&
		subscription=$(look gcloud eventarc triggers describe "${trigger##*/}" --location="$REGION" "${P[@]}" \
			--format='value(transport.pubsub.subscription)') && [[ -n $subscription ]]; then
		subscription=${subscription##*/}
	elif [[ $DRY_RUN == 1 ]]; then
		subscription='<trigger-subscription>'
	else
		die "cannot find the Pub/Sub subscription of $RELAY's trigger; is the function deployed? (gcloud functions describe $RELAY --gen2 --region=$REGION)"
	fi
	ensure_binding "pubsub subscriptions" "$subscription" "serviceAccount:$PUBSUB_AGENT" roles/pubsub.subscriber
	local policy_fields='value(deadLetterPolicy.deadLetterTopic,deadLetterPolicy.maxDeliveryAttempts,retryPolicy.minimumBackoff,retryPolicy.maximumBackoff)'
	# 20 deliveries span about 2.3 h of backoff: several after TAGRELAY_EVENTS_SETTLE_SECONDS (30 min),
	# so a delivery that waits for Mailgun's events to settle (issue 12) is not dead-lettered meanwhile.
	if desc=$(look gcloud pubsub subscriptions describe "$subscription" "${P[@]}" --format="$policy_fields") &&
		[[ $desc == "projects/$PROJECT/topics/$DL_TOPIC"$'\t20\t10s\t600s' ]]; then
		note "subscription $subscription: dead letters to $DL_TOPIC after 20 attempts, backoff 10s..600s"
	else
		run gcloud pubsub subscriptions update "$subscription" --dead-letter-topic="$DL_TOPIC" \
			--max-delivery-attempts=20 --min-retry-delay=10s --max-retry-delay=600s "${P[@]}"
	fi
}

ensure_mailgun_route() {
	step "Mailgun route for $DOMAIN ($MAILGUN_BASE)"
	local url
	if url=$(function_field "$INGEST" url) && [[ -n $url ]]; then
		url=${url%/}/mime
	elif [[ $DRY_RUN == 1 ]]; then
		url='<ingest URL>/mime'
	else
		die "cannot read $INGEST's URL (gcloud functions describe $INGEST --gen2 --region=$REGION)"
	fi
	# The keys reach the command through its environment, never its arguments; it adds ?k=<route key>.
	printf '+ MAILGUN_API_KEY=... TAGRELAY_ROUTE_KEY=... %s\n' "$(quoted "$PYTHON" -m tagrelay_tools.cli mailgun ensure-route --domain="$DOMAIN" --url="$url" --api-base="${MAILGUN_BASE%/}")" >&3
	[[ $DRY_RUN == 1 ]] && return 0
	[[ -n ${MAILGUN_API_KEY:-} ]] || die "no Mailgun API key: set MAILGUN_API_KEY"
	[[ -n ${TAGRELAY_ROUTE_KEY:-} ]] || die "no route key (secret $SECRET_ROUTE); run again"
	MAILGUN_API_KEY=$MAILGUN_API_KEY TAGRELAY_ROUTE_KEY=$TAGRELAY_ROUTE_KEY PYTHONPATH=$ROOT "$PYTHON" -m tagrelay_tools.cli mailgun ensure-route \
		--domain="$DOMAIN" --url="$url" --api-base="${MAILGUN_BASE%/}"
	INGEST_URL=$url
}

ensure_mailgun_webhooks() {
	step "Mailgun event webhooks for $DOMAIN ($MAILGUN_BASE)"
	local url
	if url=$(function_field "$EVENTS" url) && [[ -n $url ]]; then
		url=${url%/}
	elif [[ $DRY_RUN == 1 ]]; then
		url='<events URL>'
	else
		die "cannot read $EVENTS's URL (gcloud functions describe $EVENTS --gen2 --region=$REGION)"
	fi
	# delivered, permanent_fail, temporary_fail and complained post to the events function; other webhooks are left alone.
	printf '+ MAILGUN_API_KEY=... %s\n' "$(quoted "$PYTHON" -m tagrelay_tools.cli mailgun ensure-webhooks "$url" --domain="$DOMAIN" --api-base="${MAILGUN_BASE%/}")" >&3
	[[ $DRY_RUN == 1 ]] && return 0
	[[ -n ${MAILGUN_API_KEY:-} ]] || die "no Mailgun API key: set MAILGUN_API_KEY"
	MAILGUN_API_KEY=$MAILGUN_API_KEY PYTHONPATH=$ROOT "$PYTHON" -m tagrelay_tools.cli mailgun ensure-webhooks "$url" \
		--domain="$DOMAIN" --api-base="${MAILGUN_BASE%/}"
}

ensure_metric() {
	local current
	if current=$(look gcloud logging metrics describe "$METRIC" "${P[@]}" --format='value(filter)'); then
		if [[ $current == "$METRIC_FILTER" ]]; then
			note "log-based metric $METRIC: exists, same filter"
		else
			run gcloud logging metrics update "$METRIC" --log-filter="$METRIC_FILTER" "${P[@]}"
		fi
	else
		run gcloud logging metrics create "$METRIC" \
			--description="tagrelay: messages dead-lettered and forward targets suppressed by Mailgun" \
			--log-filter="$METRIC_FILTER" "${P[@]}"
	fi
}

# ensure_channel: CHANNEL holds the name of the email channel (labelled app=tagrelay) for ALERT_EMAIL;
# CHANNELS the listing it was found in (read once per run).
ensure_channel() {
	local name kind address app
	CHANNELS=$(look gcloud beta monitoring channels list "${P[@]}" --format='value(name,type,labels.email_address,userLabels.app)') || CHANNELS=""
	CHANNEL=""
	while IFS=$'\t' read -r name kind address app; do
		if [[ $app == tagrelay && $kind == email && ${address,,} == "${ALERT_EMAIL,,}" ]]; then CHANNEL=$name; fi
	done <<<"$CHANNELS"
	if [[ -n $CHANNEL ]]; then
		note "notification channel for $ALERT_EMAIL: exists ($CHANNEL)"
		return 0
	fi
	CHANNEL=$(run gcloud beta monitoring channels create --display-name="$CHANNEL_NAME" --type=email \
		--channel-labels="email_address=$ALERT_EMAIL" --user-labels=app=tagrelay "${P[@]}" --format='value(name)')
	[[ -n $CHANNEL ]] || CHANNEL='<new channel>'
}

# drop_other_channels: delete tagrelay's channels of CHANNELS other than CHANNEL (an earlier --alert-email),
# once the policy no longer names them.
drop_other_channels() {
	local name kind address app
	while IFS=$'\t' read -r name kind address app; do
		if [[ $app == tagrelay && -n $name && $name != "$CHANNEL" ]]; then
			run gcloud beta monitoring channels delete "$name" --force --quiet "${P[@]}"
		fi
	done <<<"$CHANNELS"
}

# alert_policy FILE CHANNEL: the policy as JSON, labelled with a fingerprint of its content.
alert_policy() {
	py_stdlib - "$1" "$2" "$POLICY_NAME" "$METRIC" "$PROJECT" <<'PY'
import hashlib, json, sys
path, channel, name, metric, project = sys.argv[1:]
policy = {
    "displayName": name,
    "combiner": "OR",
    "conditions": [{
        "displayName": f"{metric} above 0",
        "conditionThreshold": {
            "filter": f'metric.type="logging.googleapis.com/user/{metric}" AND resource.type="cloud_run_revision"',
            "comparison": "COMPARISON_GT",
            "thresholdValue": 0,
            "duration": "0s",
            "aggregations": [{"alignmentPeriod": "300s", "perSeriesAligner": "ALIGN_SUM", "crossSeriesReducer": "REDUCE_SUM"}],
            "trigger": {"count": 1},
        },
    }],
    "notificationChannels": [channel],
    "documentation": {
        "mimeType": "text/markdown",
        "content": (
            "tagrelay dead-lettered a message or Mailgun suppressed a forward target: mail is not arriving.\n\n"
            f"See why: `tagrelay status --project={project}` (the suppression check names the target and the fix), "
            f"`tagrelay deadletters list --project={project}`, `tagrelay trace MESSAGE-ID --project={project}`.\n\n"
            "A suppressed target is fixed with two commands: `tagrelay suppressions clear ADDRESS`, then "
            f"`tagrelay deadletters replay --project={project}`."
        ),
    },
}
fingerprint = hashlib.sha256(json.dumps(policy, sort_keys=True).encode()).hexdigest()[:32]
policy["userLabels"] = {"app": "tagrelay", "tagrelay_fp": fingerprint}
with open(path, "w") as out:
    json.dump(policy, out, indent=2)
print(fingerprint)
PY
}

ensure_alerting() {
	step "Alert: log-based metric $METRIC and an email alert policy"
	ensure_metric
	if [[ -z $ALERT_EMAIL ]]; then
		note "no --alert-email (or TAGRELAY_ALERT_EMAIL): no alert policy; nobody is emailed when mail is dead-lettered or a target suppressed"
		note "  run again with --alert-email you@example.com, or watch: tagrelay status --project=$PROJECT"
		return 0
	fi
	ensure_channel
	local file=$WORK/alert-policy.json want found name fp
	want=$(alert_policy "$file" "$CHANNEL")
	note "alert policy: $file (fingerprint $want)"
	found=$(look gcloud monitoring policies list --filter="displayName=\"$POLICY_NAME\"" "${P[@]}" --format='value(name,userLabels.tagrelay_fp)') || found=""
	IFS=$'\t' read -r name fp <<<"${found%%$'\n'*}"
	if [[ -z $name ]]; then
		run gcloud monitoring policies create --policy-from-file="$file" "${P[@]}" --format=none
	elif [[ $fp == "$want" ]]; then
		note "alert policy '$POLICY_NAME': exists, unchanged"
	else
		run gcloud monitoring policies update "$name" --policy-from-file="$file" "${P[@]}" --format=none
	fi
	drop_other_channels
}

check_routes_file() {
	[[ -f $ROUTES_FILE ]] ||
		die "no routing rules at $ROUTES_FILE: copy routes.example.toml to routes.toml and edit it, or pass --routes FILE"
	PYTHONPATH=$ROOT "$PYTHON" -c '
import sys
from tagrelay.core.errors import RoutesError
from tagrelay.core.routes import load_file
try:
    load_file(sys.argv[1])
except RoutesError as exc:
    sys.exit(f"deploy.sh: {sys.argv[1]}: {exc.reason}")
' "$ROUTES_FILE"
}

deploy() {
	check_routes_file
	[[ -f $ROOT/functions/events/main.py ]] || die "functions/events/main.py is missing: this clone has no events function to deploy"
	printf 'Deploying tagrelay to project %s, region %s, for @%s%s\n' "$PROJECT" "$REGION" "$DOMAIN" \
		"$([[ $DRY_RUN == 1 ]] && printf ' (dry run: nothing is run)')" >&3

	step "Project"
	local number
	if ! number=$(look gcloud projects describe "$PROJECT" "${P[@]}" --format='value(projectNumber)'); then
		[[ $DRY_RUN == 1 ]] || die "cannot read project $PROJECT: check the id and that you are logged in (gcloud auth login)"
		number='<PROJECT_NUMBER>'
	fi
	PUBSUB_AGENT=service-$number@gcp-sa-pubsub.iam.gserviceaccount.com
	note "Pub/Sub service agent: $PUBSUB_AGENT"

	ensure_apis

	step "Pub/Sub"
	ensure_topic "$TOPIC"
	ensure_topic "$DL_TOPIC"
	ensure_hold_subscription

	step "Secrets"
	ensure_secret "$SECRET_API" MAILGUN_API_KEY "Mailgun API key"
	ensure_secret "$SECRET_SIGNING" MAILGUN_WEBHOOK_SIGNING_KEY "Mailgun HTTP webhook signing key"
	ensure_reply_key
	ensure_route_key

	step "Service accounts"
	ensure_service_account tagrelay-ingest "tagrelay ingest function"
	ensure_service_account tagrelay-relay "tagrelay relay function"
	ensure_service_account tagrelay-events "tagrelay events function"

	ensure_firestore
	ensure_bucket

	step "Permissions"
	ensure_binding "pubsub topics" "$TOPIC" "serviceAccount:$INGEST_SA" roles/pubsub.publisher
	ensure_binding secrets "$SECRET_SIGNING" "serviceAccount:$INGEST_SA" roles/secretmanager.secretAccessor
	ensure_binding secrets "$SECRET_ROUTE" "serviceAccount:$INGEST_SA" roles/secretmanager.secretAccessor
	ensure_binding projects "$PROJECT" "serviceAccount:$INGEST_SA" roles/datastore.user
	# ingest writes messages over Pub/Sub's 10 MB cap to the bucket (an object per post) and deletes
	# its object when the publish fails, which needs delete as well as create: objectUser, not objectCreator.
	ensure_binding "storage buckets" "gs://$BUCKET" "serviceAccount:$INGEST_SA" roles/storage.objectUser
	ensure_binding secrets "$SECRET_API" "serviceAccount:$RELAY_SA" roles/secretmanager.secretAccessor
	ensure_binding projects "$PROJECT" "serviceAccount:$RELAY_SA" roles/datastore.user
	ensure_binding "pubsub topics" "$DL_TOPIC" "serviceAccount:$RELAY_SA" roles/pubsub.publisher
	# relay reads a claimed message and deletes it once sent
	ensure_binding "storage buckets" "gs://$BUCKET" "serviceAccount:$RELAY_SA" roles/storage.objectAdmin
	ensure_binding "pubsub topics" "$DL_TOPIC" "serviceAccount:$PUBSUB_AGENT" roles/pubsub.publisher
	# both functions read the reply key: ingest checks reverse addresses, relay makes them
	ensure_binding secrets "$SECRET_REPLY" "serviceAccount:$INGEST_SA" roles/secretmanager.secretAccessor
	ensure_binding secrets "$SECRET_REPLY" "serviceAccount:$RELAY_SA" roles/secretmanager.secretAccessor
	# events: the four grants listed at the top, each on the one resource it needs
	ensure_binding projects "$PROJECT" "serviceAccount:$EVENTS_SA" roles/datastore.user
	ensure_binding "pubsub topics" "$DL_TOPIC" "serviceAccount:$EVENTS_SA" roles/pubsub.publisher
	ensure_binding secrets "$SECRET_SIGNING" "serviceAccount:$EVENTS_SA" roles/secretmanager.secretAccessor
	ensure_binding secrets "$SECRET_API" "serviceAccount:$EVENTS_SA" roles/secretmanager.secretAccessor
	ensure_binding "storage buckets" "gs://$BUCKET" "serviceAccount:$EVENTS_SA" roles/storage.objectAdmin

	deploy_functions
	ensure_trigger_subscription
	ensure_mailgun_route
	ensure_mailgun_webhooks
	ensure_alerting

	if [[ $DRY_RUN == 1 ]]; then
		printf '\nDry run: nothing was run.\n' >&3
		return 0
	fi
	cat >&3 <<EOF

Done. Mailgun forwards mail for @$DOMAIN to $INGEST_URL
Send a test mail to anything@$DOMAIN, then follow it:
  gcloud logging read 'jsonPayload.stage:*' --project=$PROJECT --freshness=10m --format='value(jsonPayload)'
Dead letters wait in $DL_HOLD for 7 days:
  .venv/bin/tagrelay deadletters list --project=$PROJECT    (or: tagrelay status --project=$PROJECT)
Follow one message: .venv/bin/tagrelay trace MESSAGE-ID --project=$PROJECT
$([[ -n $ALERT_EMAIL ]] && printf 'Dead letters and suppressed targets are emailed to %s (confirm nothing: email channels need no verification).' "$ALERT_EMAIL" || printf 'No alert email: pass --alert-email to be told when mail is dead-lettered or a target suppressed.')
EOF
}

# --------------------------------------------------------------- teardown ---

delete_if_present() { # LOOKUP-CMD... -- DELETE-CMD...
	local -a lookup=()
	while [[ $1 != -- ]]; do
		lookup+=("$1")
		shift
	done
	shift
	if look "${lookup[@]}" >/dev/null; then run "$@"; else note "absent, nothing to delete: $(quoted "${lookup[@]}")"; fi
}

teardown() {
	printf 'Tearing down tagrelay in project %s, region %s (@%s)%s\n' "$PROJECT" "$REGION" "$DOMAIN" \
		"$([[ $DRY_RUN == 1 ]] && printf ' (dry run: nothing is run)')" >&3
	cat >&3 <<EOF
This deletes: the Mailgun route and event webhooks for $DOMAIN, functions $INGEST, $RELAY and $EVENTS,
topics $TOPIC and $DL_TOPIC (with $DL_HOLD and any dead letters in it), secrets $SECRET_API, $SECRET_SIGNING,
$SECRET_REPLY and $SECRET_ROUTE,
bucket gs://$BUCKET and its objects, service accounts tagrelay-ingest, tagrelay-relay and tagrelay-events,
the alert policy, its email channel and the log-based metric $METRIC.
Kept: the Firestore database (its tagrelay records expire by TTL) and the enabled APIs.
EOF
	if [[ $ASSUME_YES == 0 && $DRY_RUN == 0 ]]; then
		[[ -t 0 ]] || die "refusing to tear down without a terminal to ask; pass --yes"
		local answer
		read -r -p "Type the project id ($PROJECT) to confirm: " answer
		[[ $answer == "$PROJECT" ]] || die "not confirmed; nothing deleted"
	fi

	step "Mailgun route"
	local key=${MAILGUN_API_KEY:-}
	if [[ -z $key && $DRY_RUN == 0 ]]; then
		key=$(look gcloud secrets versions access latest --secret="$SECRET_API" "${P[@]}") || key=""
	fi
	printf '+ MAILGUN_API_KEY=... %s\n' "$(quoted "$PYTHON" -m tagrelay_tools.cli mailgun delete-route --domain="$DOMAIN" --api-base="${MAILGUN_BASE%/}")" >&3
	if [[ $DRY_RUN == 0 ]]; then
		if [[ -n $key ]]; then
			MAILGUN_API_KEY=$key PYTHONPATH=$ROOT "$PYTHON" -m tagrelay_tools.cli mailgun delete-route \
				--domain="$DOMAIN" --api-base="${MAILGUN_BASE%/}" ||
				note "could not delete the Mailgun route; delete it in Mailgun's control panel (Receiving → Routes)"
		else
			note "no Mailgun API key (set MAILGUN_API_KEY): delete the route in Mailgun's control panel"
		fi
	fi

	step "Mailgun event webhooks"
	local events_url
	events_url=$(function_field "$EVENTS" url) || events_url=""
	events_url=${events_url%/}
	if [[ $DRY_RUN == 1 ]]; then events_url='<events URL>'; fi
	if [[ -z $events_url ]]; then
		note "no $EVENTS function: no webhook URL to take off"
	else
		printf '+ MAILGUN_API_KEY=... %s\n' "$(quoted "$PYTHON" -m tagrelay_tools.cli mailgun delete-webhooks "$events_url" --domain="$DOMAIN" --api-base="${MAILGUN_BASE%/}")" >&3
		if [[ $DRY_RUN == 0 ]]; then
			if [[ -n $key ]]; then
				MAILGUN_API_KEY=$key PYTHONPATH=$ROOT "$PYTHON" -m tagrelay_tools.cli mailgun delete-webhooks "$events_url" \
					--domain="$DOMAIN" --api-base="${MAILGUN_BASE%/}" ||
					note "could not delete the webhooks; delete them in Mailgun's control panel (Sending → Webhooks)"
			else
				note "no Mailgun API key (set MAILGUN_API_KEY): delete the webhooks in Mailgun's control panel"
			fi
		fi
	fi

	step "Alert policy, its email channel and the log-based metric"
	local policies name fp channels kind address app
	policies=$(look gcloud monitoring policies list --filter="displayName=\"$POLICY_NAME\"" "${P[@]}" --format='value(name,userLabels.tagrelay_fp)') || policies=""
	while IFS=$'\t' read -r name fp; do
		if [[ -n $name ]]; then run gcloud monitoring policies delete "$name" --quiet "${P[@]}"; fi
	done <<<"$policies"
	channels=$(look gcloud beta monitoring channels list "${P[@]}" --format='value(name,type,labels.email_address,userLabels.app)') || channels=""
	while IFS=$'\t' read -r name kind address app; do
		if [[ $app == tagrelay && -n $name ]]; then run gcloud beta monitoring channels delete "$name" --force --quiet "${P[@]}"; fi
	done <<<"$channels"
	delete_if_present gcloud logging metrics describe "$METRIC" "${P[@]}" --format='value(name)' -- \
		gcloud logging metrics delete "$METRIC" --quiet "${P[@]}"

	step "Functions (their trigger subscription goes with them)"
	local fn
	for fn in "$INGEST" "$RELAY" "$EVENTS"; do
		delete_if_present gcloud functions describe "$fn" --gen2 --region="$REGION" "${P[@]}" --format='value(name)' -- \
			gcloud functions delete "$fn" --gen2 --region="$REGION" --quiet "${P[@]}"
	done

	step "Pub/Sub"
	delete_if_present gcloud pubsub subscriptions describe "$DL_HOLD" "${P[@]}" --format='value(name)' -- \
		gcloud pubsub subscriptions delete "$DL_HOLD" --quiet "${P[@]}"
	local topic
	for topic in "$TOPIC" "$DL_TOPIC"; do
		delete_if_present gcloud pubsub topics describe "$topic" "${P[@]}" --format='value(name)' -- \
			gcloud pubsub topics delete "$topic" --quiet "${P[@]}"
	done

	step "Secrets"
	local secret
	for secret in "$SECRET_API" "$SECRET_SIGNING" "$SECRET_REPLY" "$SECRET_ROUTE"; do
		delete_if_present gcloud secrets describe "$secret" "${P[@]}" --format='value(name)' -- \
			gcloud secrets delete "$secret" --quiet "${P[@]}"
	done

	step "Bucket"
	delete_if_present gcloud storage buckets describe "gs://$BUCKET" "${P[@]}" --format='value(name)' -- \
		gcloud storage rm --recursive "gs://$BUCKET" "${P[@]}"

	step "Service accounts and their project roles"
	local account policy
	policy=$(look gcloud projects get-iam-policy "$PROJECT" "${P[@]}" "${IAM_ROWS[@]}") || policy=""
	for account in "$INGEST_SA" "$RELAY_SA" "$EVENTS_SA"; do
		if has_binding "serviceAccount:$account" roles/datastore.user <<<"$policy"; then
			run gcloud projects remove-iam-policy-binding "$PROJECT" --member="serviceAccount:$account" \
				--role=roles/datastore.user --condition=None "${P[@]}" --format=none
		fi
		delete_if_present gcloud iam service-accounts describe "$account" "${P[@]}" --format='value(email)' -- \
			gcloud iam service-accounts delete "$account" --quiet "${P[@]}"
	done
	[[ $DRY_RUN == 1 ]] || rm -rf "$BUILD_DIR/ingest" "$BUILD_DIR/relay" "$BUILD_DIR/events"
	printf '\nTeardown %s.\n' "$([[ $DRY_RUN == 1 ]] && printf 'printed; nothing was run' || printf 'done')" >&3
}

# ------------------------------------------------------------------- main ---

if [[ $DRY_RUN == 0 ]]; then
	command -v gcloud >/dev/null || die "gcloud is not installed: https://cloud.google.com/sdk/docs/install"
fi
command -v "$PYTHON" >/dev/null || die "no Python at '$PYTHON': run 'make' first or set PYTHON"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PUBSUB_AGENT=""
INGEST_URL=""
ROUTE_KEY_VERSION=latest
ROUTE_KEY_PREVIOUS_VERSION=""
TAGRELAY_ROUTE_KEY=""
CHANNEL=""
CHANNELS=""

if [[ $TEARDOWN == 1 ]]; then teardown; else deploy; fi
