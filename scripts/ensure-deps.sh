#!/usr/bin/env bash
# Install what `make run` / `make test` need when it is missing, with the
# machine's package manager. Idempotent: does nothing when all is present.
set -euo pipefail
want="${1:-test}"

missing=()
have_softhsm() {
  for p in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
           /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so /usr/lib64/pkcs11/libsofthsm2.so; do
    [ -e "$p" ] && return 0
  done
  return 1
}
have_softhsm || missing+=(softhsm2)
command -v openssl >/dev/null || missing+=(openssl)
if [ "$want" = test ] || [ "$want" = bench ]; then
  command -v cfssl >/dev/null || missing+=(golang-cfssl)
  command -v multirootca >/dev/null || missing+=(golang-cfssl)
  command -v cc >/dev/null || missing+=(gcc)          # builds the fault-injecting PKCS#11 module
  command -v curl >/dev/null || missing+=(curl)       # HTTP/2 flood test
  command -v wrk >/dev/null || missing+=(wrk)         # make bench: the independent load generator
  command -v psql >/dev/null || missing+=(postgresql-client)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  # The HSM conformance suite's other PKCS#11 modules (tests/src/hsm_env/).
  have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ]; }
  have_lib() {
    local f
    for f in /usr/lib/*/"$1" /usr/lib/*/*/"$1" /usr/lib64/"$1"; do [ -e "$f" ] && return 0; done
    return 1
  }
  have pkcsslotd || missing+=(opencryptoki)
  have_lib libtpm2_pkcs11.so || missing+=(libtpm2-pkcs11-1)
  have tpm2_ptool || missing+=(libtpm2-pkcs11-tools)
  have tpm2-abrmd || missing+=(tpm2-abrmd)
  have_lib libtss2-tcti-tabrmd.so.0 || missing+=(libtss2-tcti-tabrmd0)
  have swtpm || missing+=(swtpm swtpm-tools)
  have tpm2_dictionarylockout || missing+=(tpm2-tools)
  have dbus-daemon || missing+=(dbus)
  have certutil || missing+=(libnss3-tools)
  have_lib libsoftokn3.so || missing+=(libnss3)
  have nsenter || missing+=(util-linux)
  # promtool checks and unit-tests deploy/prometheus/ (tests/tests/operator_rules.rs).
  command -v promtool >/dev/null || missing+=(prometheus)
  # Headless browser for the web console's end-to-end test.
  command -v chromium >/dev/null || missing+=(chromium)
fi
# make bench profiles one Trellis run (ca-bench/src/profile.rs).
if [ "$want" = bench ]; then
  command -v perf >/dev/null || missing+=(linux-perf)
fi

[ ${#missing[@]} -eq 0 ] && exit 0
# de-duplicate
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if command -v apt-get >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
elif command -v dnf >/dev/null; then
  missing=("${missing[@]/golang-cfssl/golang-github-cloudflare-cfssl}")
  missing=("${missing[@]/#prometheus/golang-github-prometheus}")
  $SUDO dnf install -y "${missing[@]}"
else
  echo "please install: ${missing[*]}" >&2
  exit 1
fi
