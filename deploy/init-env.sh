#!/usr/bin/env bash
# Write the env files docker-compose.yml reads, from the *.env.example files beside this
# script, with fresh random secrets that agree with each other:
#   postgres.env  POSTGRES_PASSWORD            backend.env  DATABASE_URL (same password),
#   aws.env, azure.env, gcp.env  IAC_RUNNER_TOKEN  ==  RUNNER_<PROVIDER>_TOKEN in backend.env,
#   backend.env  ENCRYPTION_KEY (./generate-encryption-key.sh), IAC_API_TOKEN.
# Cloud credentials are left for you to fill in (see the comments in each file).
#
#   deploy/init-env.sh [DIR]     write into DIR (default: the deploy/ folder)
#
# It never overwrites: when some of the files exist it stops and names them.
set -euo pipefail

if [[ $# -gt 1 || ${1:-} == -* ]]; then
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$here}
mkdir -p "$dir"
names=(postgres backend aws azure gcp)

existing=()
for name in "${names[@]}"; do
    [[ -e "$dir/$name.env" ]] && existing+=("$dir/$name.env")
done
if [[ ${#existing[@]} -gt 0 ]]; then
    echo "$0: already there, left as they are: ${existing[*]}" >&2
    echo "$0: edit them by hand, or remove them to start afresh; mind that an existing" \
         "postgres volume keeps its first password, and stored secrets need their old" \
         "ENCRYPTION_KEY" >&2
    exit 1
fi

random() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }

# set_value FILE KEY VALUE: replace the line KEY=... of FILE.
set_value() {
    local tmp
    tmp=$(mktemp "$1.XXXXXX")
    awk -v key="$2" -v value="$3" \
        'index($0, key "=") == 1 { print key "=" value; next } { print }' "$1" > "$tmp"
    mv "$tmp" "$1"
}

umask 077
for name in "${names[@]}"; do
    cp "$here/$name.env.example" "$dir/$name.env"
done

password=$(random)
set_value "$dir/postgres.env" POSTGRES_PASSWORD "$password"
set_value "$dir/backend.env" DATABASE_URL "postgresql://iac:$password@postgres:5432/iac"
set_value "$dir/backend.env" ENCRYPTION_KEY "$("$here/../generate-encryption-key.sh")"
set_value "$dir/backend.env" IAC_API_TOKEN "$(random)"
for provider in aws azure gcp; do
    token=$(random)
    set_value "$dir/$provider.env" IAC_RUNNER_TOKEN "$token"
    set_value "$dir/backend.env" "RUNNER_${provider^^}_TOKEN" "$token"
done

echo "wrote ${names[*]/%/.env} in $dir"
echo "next: fill in the cloud credentials in $dir/{aws,azure,gcp}.env, then: docker compose up -d"
