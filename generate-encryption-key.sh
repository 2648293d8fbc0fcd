#!/usr/bin/env bash
# Print a new Fernet key for ENCRYPTION_KEY, or write ENCRYPTION_KEY=<key> into a file.
#
#   ./generate-encryption-key.sh            print a key
#   ./generate-encryption-key.sh .env       add ENCRYPTION_KEY=<key> to .env
#   ./generate-encryption-key.sh --force .env   replace the key already in .env
#
# Replacing a key makes secrets encrypted with the old one unreadable, so it takes --force.
# To rotate instead, set ENCRYPTION_KEY=NEW,OLD: the first key encrypts, all decrypt.
set -euo pipefail

usage() { echo "usage: $0 [--force] [FILE]" >&2; exit 2; }

force=0
file=""
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) usage ;;
        *) [[ -z "$file" ]] || usage; file="$arg" ;;
    esac
done

# A Fernet key is 32 random bytes, url-safe base64 encoded (44 characters).
if command -v python3 >/dev/null; then
    key=$(python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')
else
    key=$(head -c 32 /dev/urandom | base64 | tr '+/' '-_')
fi

if [[ -z "$file" ]]; then
    echo "$key"
    exit 0
fi

if [[ -f "$file" ]] && grep -Eq '^[[:space:]]*(export[[:space:]]+)?ENCRYPTION_KEY=' "$file"; then
    if [[ $force -ne 1 ]]; then
        echo "$0: $file already sets ENCRYPTION_KEY; secrets encrypted with it would become" \
             "unreadable. Use --force to replace it." >&2
        exit 1
    fi
    tmp=$(mktemp "${file}.XXXXXX")
    grep -Ev '^[[:space:]]*(export[[:space:]]+)?ENCRYPTION_KEY=' "$file" > "$tmp" || true
    echo "ENCRYPTION_KEY=$key" >> "$tmp"
    chmod 600 "$tmp"
    mv "$tmp" "$file"
    echo "replaced ENCRYPTION_KEY in $file" >&2
else
    [[ -f "$file" ]] || (umask 077 && : > "$file")
    # Keep the file's last line intact when it lacks a newline.
    if [[ -s "$file" && -n "$(tail -c 1 "$file")" ]]; then echo >> "$file"; fi
    echo "ENCRYPTION_KEY=$key" >> "$file"
    echo "wrote ENCRYPTION_KEY to $file" >&2
fi
