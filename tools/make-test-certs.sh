#!/usr/bin/env bash
# Makes throw-away certificates for the TLS specs (never for production).
#
#   tools/make-test-certs.sh OUTDIR
#
# Writes into OUTDIR (created if missing), all PEM, EC P-256 keys:
#   ca.pem / ca-key.pem                 a test CA
#   server.pem / server-key.pem         server cert for 127.0.0.1 and localhost, signed by ca
#   client.pem / client-key.pem         client cert (CN=hemera-test-client) for mutual TLS, signed by ca
#   wronghost.pem / wronghost-key.pem   server cert for wrong.invalid only, signed by ca
#   other-ca.pem / other-ca-key.pem     a second CA nobody trusts
#   other-client.pem / other-client-key.pem  client cert signed by other-ca
#   other-server.pem / other-server-key.pem  server cert for 127.0.0.1, signed by other-ca
# Needs openssl (apt-get install openssl).
set -euo pipefail
command -v openssl >/dev/null || { echo "make-test-certs: openssl is not installed (apt-get install openssl)" >&2; exit 2; }
out=${1:?usage: make-test-certs.sh OUTDIR}
mkdir -p "$out"
cd "$out"
days=30

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }

ca() { # name cn
  key "$1-key.pem"
  openssl req -x509 -new -key "$1-key.pem" -sha256 -days "$days" -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$1.pem" 2>/dev/null
}

leaf() { # name cn ca usage san
  local name=$1 cn=$2 signer=$3 usage=$4 san=$5 ext
  key "$name-key.pem"
  openssl req -new -key "$name-key.pem" -subj "/CN=$cn" -out "$name.csr" 2>/dev/null
  ext=$(mktemp)
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$ext"
  openssl x509 -req -in "$name.csr" -CA "$signer.pem" -CAkey "$signer-key.pem" -CAcreateserial \
    -sha256 -days "$days" -extfile "$ext" -out "$name.pem" 2>/dev/null
  rm -f "$ext" "$name.csr"
}

ca ca "hemera-test-ca"
leaf server "127.0.0.1" ca serverAuth "IP:127.0.0.1,DNS:localhost"
leaf client "hemera-test-client" ca clientAuth ""
leaf wronghost "wrong.invalid" ca serverAuth "DNS:wrong.invalid"
ca other-ca "hemera-untrusted-ca"
leaf other-client "hemera-untrusted-client" other-ca clientAuth ""
leaf other-server "127.0.0.1" other-ca serverAuth "IP:127.0.0.1,DNS:localhost"
rm -f ./*.srl
openssl verify -CAfile ca.pem server.pem client.pem wronghost.pem >/dev/null
echo "make-test-certs: certificates in $out" >&2
