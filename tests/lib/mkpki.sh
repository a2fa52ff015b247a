#!/usr/bin/env bash
# mkpki.sh DIR - makes a throwaway PKI with certtool for tests and the demo.
#
#   ca.pem ca-key.pem              the organisation's CA
#   broker.pem broker-key.pem      server: SAN localhost, broker.corp.example,
#                                  127.0.0.1, ::1
#   ldap.pem ldap-key.pem          slapd: SAN localhost, 127.0.0.1
#   ws-042.pem ws-042-key.pem      agent: SAN ws-042.corp.example
#   ws-043.pem ws-043-key.pem      agent: SAN ws-043.corp.example
#   cn-only.pem cn-only-key.pem    client with CN only (ws-cn.corp.example)
#   helper-alice.pem ...-key.pem   helper client cert, CN alice, SAN email
#   rogue-ca.pem rogue-ca-key.pem  an untrusted CA
#   rogue.pem rogue-key.pem        client cert from the untrusted CA
#   expired.pem expired-key.pem    client cert from the CA, already expired
# Keys are ECDSA P-256 (fast to make). Existing files are kept.
set -euo pipefail
dir=${1:?usage: mkpki.sh DIR}
mkdir -p "$dir"
cd "$dir"
[ -f ca.pem ] && [ -f expired.pem ] && exit 0

key() { certtool --generate-privkey --key-type=ecdsa --curve=secp256r1 \
        --outfile "$1" 2>/dev/null; }

mkca() { # name cn
    key "$1-key.pem"
    cat > "$1.tmpl" <<T
cn = "$2"
organization = "rabroker test"
serial = $RANDOM$RANDOM
expiration_days = 30
ca
cert_signing_key
crl_signing_key
T
    certtool --generate-self-signed --load-privkey "$1-key.pem" \
        --template "$1.tmpl" --outfile "$1.pem" 2>/dev/null
}

mkcert() { # name ca role cn days [san lines...]
    local name=$1 ca=$2 role=$3 cn=$4 days=$5
    shift 5
    key "$name-key.pem"
    {
        echo "cn = \"$cn\""
        echo "organization = \"rabroker test\""
        echo "serial = $RANDOM$RANDOM"
        echo "expiration_days = $days"
        echo "signing_key"
        echo "encryption_key"
        if [ "$role" = server ]; then echo "tls_www_server"; else echo "tls_www_client"; fi
        for s in "$@"; do echo "$s"; done
    } > "$name.tmpl"
    certtool --generate-certificate --load-privkey "$name-key.pem" \
        --load-ca-certificate "$ca.pem" --load-ca-privkey "$ca-key.pem" \
        --template "$name.tmpl" --outfile "$name.pem" 2>/dev/null
}

mkca ca "rabroker test CA"
mkca rogue-ca "rogue CA"
mkcert broker ca server broker.corp.example 30 \
    'dns_name = "localhost"' 'dns_name = "broker.corp.example"' \
    'ip_address = "127.0.0.1"' 'ip_address = "::1"'
mkcert ldap ca server localhost 30 'dns_name = "localhost"' \
    'ip_address = "127.0.0.1"'
mkcert ws-042 ca client ws-042.corp.example 30 'dns_name = "ws-042.corp.example"'
mkcert ws-043 ca client ws-043.corp.example 30 'dns_name = "ws-043.corp.example"'
mkcert cn-only ca client ws-cn.corp.example 30
mkcert helper-alice ca client alice 30 'email = "alice@corp.example"'
mkcert rogue rogue-ca client ws-042.corp.example 30 'dns_name = "ws-042.corp.example"'
# An expired client certificate: explicit activation and expiration dates.
key expired-key.pem
cat > expired.tmpl <<T
cn = "ws-042.corp.example"
dns_name = "ws-042.corp.example"
serial = $RANDOM$RANDOM
activation_date = "2020-01-01 00:00:00 UTC"
expiration_date = "2020-02-01 00:00:00 UTC"
signing_key
tls_www_client
T
certtool --generate-certificate --load-privkey expired-key.pem \
    --load-ca-certificate ca.pem --load-ca-privkey ca-key.pem \
    --template expired.tmpl --outfile expired.pem 2>/dev/null
chmod 600 ./*-key.pem
rm -f ./*.tmpl
