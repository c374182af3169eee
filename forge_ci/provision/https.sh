#!/usr/bin/env bash
# forge-https: HTTPS for the site nginx serves. Idempotent; the renewal timer runs it too.
# Obtains an ACME certificate (lego, HTTP-01 through nginx's webroot), writes the TLS part
# of the live server block into /etc/nginx/forge-https/site.conf (the live server, never
# the loopback preview, has `include /etc/nginx/forge-https/*.conf;`), reloads nginx and
# installs a twice-daily timer (systemd, else cron) that renews and reloads.
# Exit: 0 served over HTTPS (or ACME off), 2 bad settings, 3 pending (the CA could not
# reach the site yet: it stays on HTTP, the timer retries), 1 anything else.
# /var/lib/forge-https/status holds one line for doctor: ok|pending|off|failed, time, names.
# Settings (saved to /etc/forge-https.env; a run without FORGE_HTTPS_DOMAINS loads them):
#   FORGE_HTTPS_DOMAINS  names, the first is the certificate's main name
#   FORGE_HTTPS_ACME     letsencrypt | letsencrypt-staging | off | a directory URL
#   FORGE_HTTPS_EMAIL    ACME account e-mail     FORGE_HTTPS_HSTS  true | false
#   FORGE_HTTPS_CA_FILE  trust for a private CA's ACME API (optional)
#   FORGE_HTTPS_LISTEN, _PORT, _HTTP_PORT, _NGINX, _SCHEDULER (auto|systemd|cron|none)
# FORGE_HTTPS_ROOT prefixes every path (tests run the script inside a directory).
set -euo pipefail
PATH="$PATH:/usr/sbin:/sbin"  # cron's PATH lacks nginx

root="${FORGE_HTTPS_ROOT:-}"
env_file="$root/etc/forge-https.env"
loaded=0
if [ -z "${FORGE_HTTPS_DOMAINS+x}" ] && [ -r "$env_file" ]; then
  # shellcheck disable=SC1090
  . "$env_file"; loaded=1
fi
domains="${FORGE_HTTPS_DOMAINS:-}"; domains="${domains//,/ }"
acme="${FORGE_HTTPS_ACME:-letsencrypt}"
email="${FORGE_HTTPS_EMAIL:-}"
hsts="${FORGE_HTTPS_HSTS:-false}"
ca_file="${FORGE_HTTPS_CA_FILE:-}"
listen="${FORGE_HTTPS_LISTEN:-443 [::]:443}"
port="${FORGE_HTTPS_PORT:-443}"
http_port="${FORGE_HTTPS_HTTP_PORT:-80}"
read -ra nginx <<<"${FORGE_HTTPS_NGINX:-nginx}"
scheduler="${FORGE_HTTPS_SCHEDULER:-auto}"
renew_days="${FORGE_HTTPS_RENEW_DAYS:-30}"  # not saved: a one-off override
lib="$root/var/lib/forge-https"
state="$lib/lego"  # account and certificate keys: root only
webroot="$lib/acme"  # nginx serves /.well-known/acme-challenge/ from here
status_file="$lib/status"
snippet="$root/etc/nginx/forge-https/site.conf"
units="$root/etc/systemd/system"
cron_file="$root/etc/cron.d/forge-https"
bin="$root/usr/local/sbin/forge-https"

say() { echo "forge-https: $*"; }
status() { mkdir -p "$lib"; echo "$1 $(date -u +%FT%TZ) $domains" >"$status_file"; }
die() { echo "forge-https: error: ${*:2}" >&2; exit "$1"; }

case "$acme" in
  letsencrypt) server=https://acme-v02.api.letsencrypt.org/directory ;;
  letsencrypt-staging) server=https://acme-staging-v02.api.letsencrypt.org/directory ;;
  off) server=off ;;
  https://*) server="$acme" ;;
  *) die 2 "FORGE_HTTPS_ACME=$acme: use letsencrypt, letsencrypt-staging, off" \
       "or an https:// directory URL" ;;
esac
case "$hsts" in true|false) ;; *) die 2 "FORGE_HTTPS_HSTS=$hsts: use true or false" ;; esac
[ "$server" = off ] || [ -n "$domains" ] ||
  die 2 "FORGE_HTTPS_DOMAINS is empty: name the site's host names"
for name in $domains; do
  [[ "$name" =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$ && "$name" == *.* ]] ||
    die 2 "FORGE_HTTPS_DOMAINS: '$name' is not a host name (lower case, like www.example.com)"
done
read -ra names <<<"$domains"
main="${names[0]:-}"
crt="$state/certificates/$main.crt"
key="$state/certificates/$main.key"
[ -z "$ca_file" ] || export LEGO_CA_CERTIFICATES="$ca_file"

# put FILE MODE: stdin into FILE when different; status 0 when it changed.
put() {
  local tmp; tmp="$(mktemp "$1.XXXXXX")"
  cat >"$tmp"; chmod "$2" "$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
  mv -f "$tmp" "$1"
}

save_settings() {
  mkdir -p "$(dirname "$env_file")" "$(dirname "$bin")"
  [ "$loaded" = 1 ] || { for var in DOMAINS ACME EMAIL HSTS CA_FILE LISTEN PORT HTTP_PORT NGINX \
      SCHEDULER; do
      v="FORGE_HTTPS_$var"; [ -z "${!v+x}" ] || printf '%s=%q\n' "$v" "${!v}"
    done; } | put "$env_file" 0600 || true
  local self="${BASH_SOURCE[0]}"
  [ ! -f "$self" ] || [ "$self" -ef "$bin" ] || put "$bin" 0755 <"$self" || true
}

schedule() {
  local run="$bin" env=""
  [ -z "$root" ] || { run="FORGE_HTTPS_ROOT=$root $bin"; env="Environment=${run% *}"; }
  if [ "$scheduler" = auto ]; then
    if [ -d /run/systemd/system ]; then scheduler=systemd; else scheduler=cron; fi
  fi
  case "$scheduler" in
    systemd)
      mkdir -p "$units"
      printf '%s\n' "[Unit]" "Description=forge-https: issue or renew the site's certificate" \
        "After=network-online.target nginx.service" "Wants=network-online.target" "" \
        "[Service]" "Type=oneshot" "$env" \
        "ExecStart=$bin" "SuccessExitStatus=3" | put "$units/forge-https.service" 0644 || true
      printf '%s\n' "[Unit]" "Description=forge-https twice a day" "" "[Timer]" \
        "OnCalendar=*-*-* 00,12:00:00" "RandomizedDelaySec=1h" "Persistent=true" "" \
        "[Install]" "WantedBy=timers.target" | put "$units/forge-https.timer" 0644 || true
      if [ -d /run/systemd/system ]; then
        systemctl daemon-reload && systemctl enable --now forge-https.timer >/dev/null
      fi ;;
    cron)
      mkdir -p "$(dirname "$cron_file")"
      printf '%s\n' "# forge-https: issue or renew the site's certificate, reload nginx" \
        "17 3,15 * * * root $run >>/var/log/forge-https.log 2>&1" | put "$cron_file" 0644 || true ;;
    none) ;;
    *) die 2 "FORGE_HTTPS_SCHEDULER=$scheduler: use auto, systemd, cron or none" ;;
  esac
}

acme_location() {
  printf '%s\n' "location ^~ /.well-known/acme-challenge/ {" "    root $webroot;" \
    "    default_type text/plain;" "}"
}

# Mozilla's "intermediate" profile (the DHE suites need a dhparam file; left out).
ciphers=ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384
ciphers+=:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305

# shellcheck disable=SC2016  # $host, $scheme...: nginx's variables, not the shell's
tls_block() {
  local addr
  for addr in $listen; do echo "listen $addr ssl http2;"; done
  printf '%s\n' "ssl_certificate $crt;" "ssl_certificate_key $key;" \
    "ssl_protocols TLSv1.2 TLSv1.3;" \
    "ssl_ciphers $ciphers;" \
    "ssl_prefer_server_ciphers off;" "ssl_session_cache shared:forge_https:10m;" \
    "ssl_session_timeout 1d;" "ssl_session_tickets off;"
  [ "$hsts" = false ] || echo 'add_header Strict-Transport-Security "max-age=63072000" always;'
  local to='https://$host'; [ "$port" = 443 ] || to="$to:$port"
  # Plain HTTP goes to HTTPS, except the CA's challenge requests.
  printf '%s\n' 'set $forge_https_redirect "";' \
    'if ($scheme = http) { set $forge_https_redirect 1; }' \
    'if ($uri ~ "^/\.well-known/acme-challenge/") { set $forge_https_redirect ""; }' \
    "if (\$forge_https_redirect) { return 301 $to\$request_uri; }"
}

# write_snippet http|https: the server block's TLS part; reload nginx when it changed.
write_snippet() {
  mkdir -p "$(dirname "$snippet")"
  local old=""; [ ! -e "$snippet" ] || old="$(cat "$snippet")"
  if { echo "# Written by forge-https ($1). Change the settings and re-run forge-https."
       [ "$server" = off ] || acme_location
       [ "$1" = http ] || tls_block; } | put "$snippet" 0644; then
    if ! "${nginx[@]}" -t -q; then
      printf '%s\n' "$old" >"$snippet"
      die 1 "nginx rejected $snippet; the previous version is back"
    fi
    reload
  fi
}

reloaded=0
reload() { "${nginx[@]}" -s reload || die 1 "nginx reload failed: is nginx running?"; reloaded=1; }

# Wait until nginx serves the webroot (a reload is asynchronous: old workers answer for a
# moment; three good answers in a row), or say that the include is missing.
challenge_served() {
  local token="forge-probe-$RANDOM$RANDOM" line="" good=0
  echo ok >"$webroot/.well-known/acme-challenge/$token"
  for _ in $(seq 60); do
    if exec 3<>"/dev/tcp/127.0.0.1/$http_port"; then
      printf 'GET /.well-known/acme-challenge/%s HTTP/1.0\r\nHost: %s\r\n\r\n' "$token" "$main" >&3
      read -r line <&3 || true; exec 3<&-
    fi 2>/dev/null
    if [[ "$line" == *" 200 "* ]]; then good=$((good + 1)); else good=0; fi
    [ "$good" -lt 3 ] || break
    sleep 0.2
  done
  rm -f "$webroot/.well-known/acme-challenge/$token"
  [ "$good" -ge 3 ] || die 1 "nginx on port $http_port does not serve $webroot at" \
    "/.well-known/acme-challenge/: the site's server block needs" \
    "include $(dirname "$snippet")/*.conf;"
}

lego_cmd() {
  local args=(--accept-tos --server "$server" --path "$state" --http --http.webroot "$webroot")
  [ -z "$email" ] || args+=(--email "$email")
  for name in "${names[@]}"; do args+=(--domains "$name"); done
  lego "${args[@]}" "$@"
}

save_settings
schedule
if [ "$server" = off ]; then
  write_snippet http
  status off
  say "ACME is off: nginx serves HTTP only (TLS ends in front of this server)"
  exit 0
fi
mkdir -p "$webroot/.well-known/acme-challenge" "$state"
chmod 0700 "$state"
stamp="$server $domains"
if [ -s "$crt" ] && [ "$(cat "$state/forge-issued" 2>/dev/null)" = "$stamp" ]; then
  before="$(cksum <"$crt")"
  if ! lego_cmd renew --days "$renew_days" --no-random-sleep >"$state/last.log" 2>&1; then
    tail -n 3 "$state/last.log" >&2
    status failed
    die 1 "renewing the certificate for $main failed; the current one is still served" \
      "(see $state/last.log)"
  fi
  write_snippet https
  if [ "$(cksum <"$crt")" != "$before" ]; then
    [ "$reloaded" = 1 ] || reload
    say "renewed the certificate for $main"
  fi
  status ok
  say "HTTPS is on for $domains"
  exit 0
fi
# A certificate for other names keeps being served while the new one is issued.
[ -s "$crt" ] || write_snippet http
challenge_served
if ! lego_cmd run >"$state/last.log" 2>&1; then
  tail -n 3 "$state/last.log" >&2
  if grep -Eq 'acme:error:(connection|dns|unauthorized|incorrectResponse)' "$state/last.log"; then
    say "PENDING: no certificate for $domains yet: the CA could not fetch" \
      "http://$main/.well-known/acme-challenge/ from this server. Point the DNS A/AAAA" \
      "records of $domains at this server and allow port 80; the timer retries twice a day," \
      "or run $bin now. The site stays on HTTP until then."
  else
    say "PENDING: no certificate for $domains yet: the ACME server $server failed or" \
      "was unreachable (above); the timer retries twice a day. The site stays on HTTP."
  fi
  status pending
  exit 3
fi
echo "$stamp" >"$state/forge-issued"
reloaded=0
write_snippet https
[ "$reloaded" = 1 ] || reload
status ok
say "HTTPS is on for $domains (certificate from $server)"
