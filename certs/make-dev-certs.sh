#!/bin/sh
# Makes the DEVELOPMENT certificate set used by `vfio-migrate demo` and the tests:
# a CA plus `source` and `destination` host certificates (ECDSA P-256), each usable
# as TLS client and server. NOT for production: these private keys are published in this repository.
#
#   certs/make-dev-certs.sh [OUTDIR]      (default: certs/dev next to this script)
set -eu

OUT=${1:-"$(cd "$(dirname "$0")" && pwd)/dev"}
CA_DAYS=${CA_DAYS:-7300}      # 20 years: the demo must keep working without renewals
LEAF_DAYS=${LEAF_DAYS:-7000}  # a little shorter than the CA so the chain stays valid
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# CA: may sign certificates and CRLs, nothing else.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$OUT/ca-key.pem"
openssl req -x509 -new -key "$OUT/ca-key.pem" -sha256 -days "$CA_DAYS" \
    -subj "/O=vfio-migrate development/CN=vfio-migrate development CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$OUT/ca.pem"

leaf() { # NAME: writes NAME.pem and NAME-key.pem
    name=$1
    cat > "$TMP/$name.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:$name.vfio-migrate.test,DNS:localhost,IP:127.0.0.1,IP:::1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$OUT/$name-key.pem"
    openssl req -new -key "$OUT/$name-key.pem" -subj "/O=vfio-migrate development/CN=$name.vfio-migrate.test" \
        -out "$TMP/$name.csr"
    # A random 16-byte serial: no serial file to keep, no collisions between runs.
    openssl x509 -req -in "$TMP/$name.csr" -CA "$OUT/ca.pem" -CAkey "$OUT/ca-key.pem" \
        -set_serial "0x$(openssl rand -hex 16)" -sha256 -days "$LEAF_DAYS" \
        -extfile "$TMP/$name.ext" -out "$OUT/$name.pem"
    chmod 600 "$OUT/$name-key.pem"
}

leaf source
leaf destination
chmod 600 "$OUT/ca-key.pem"
openssl verify -CAfile "$OUT/ca.pem" "$OUT/source.pem" "$OUT/destination.pem"
echo "development certificates written to $OUT"
