/* Orthanc's HTTPS on Debian bookworm: Debian's civetweb 1.15 (libcivetweb1) loads OpenSSL at run
 * time (dlopen "libssl.so", "libcrypto.so") and resolves OpenSSL 1.1's SSL_get_peer_certificate,
 * which OpenSSL 3 only has as a macro: the pointer stays NULL and the first HTTPS connection
 * crashes Orthanc (SIGSEGV in a civetweb worker). This "libssl.so", found first on
 * LD_LIBRARY_PATH, depends on libssl.so.3 (every other symbol resolves there) and adds that one
 * function, which OpenSSL 3 renamed (same semantics: a new reference to the peer's certificate).
 * Built by docker/peers/orthanc.Dockerfile and scripts/ci/orthanc.py:
 *   gcc -shared -fPIC -O2 -o libssl.so orthanc-sslshim.c -Wl,--no-as-needed -l:libssl.so.3 */
typedef struct ssl_st SSL;
typedef struct x509_st X509;

X509 *SSL_get1_peer_certificate(const SSL *ssl);

X509 *SSL_get_peer_certificate(const SSL *ssl);
X509 *SSL_get_peer_certificate(const SSL *ssl) { return SSL_get1_peer_certificate(ssl); }
