# syntax=docker/dockerfile:1
# Orthanc from Debian (with its DICOMweb and GDCM plugins) for the `local` compose stack, where
# orthancteam/orthanc cannot be pulled. Configured by docker/peers/orthanc.json (mounted or the
# copy below): HTTPS only (its certificate and key in /run/secrets/orthanc_https), HTTP user
# `radgate` whose password comes from ORTHANC_PASSWORD_FILE (the entrypoint exports it; Orthanc
# substitutes ${ORTHANC_PASSWORD}), known AE titles only, DICOMweb at /dicom-web/. TCP_NODELAY=1:
# without it each C-STORE waits ~90 ms (Nagle + delayed ACK).
# OHIF (optional): with the viewer's dist mounted at /run/radgate-ohif at build time, it is copied
# into /usr/share/radgate/ohif and served under /ohif/ (see imaging.gateway.viewer).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE}

ENV TCP_NODELAY=1
# Debian stable: the suite pins the versions (security updates only).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends orthanc orthanc-dicomweb orthanc-gdcm dcmtk \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
    && mkdir -p /var/lib/orthanc/db \
    && chown -R orthanc:orthanc /var/lib/orthanc
COPY docker/peers/orthanc.json /etc/radgate-orthanc/orthanc.json
COPY imaging/gateway/viewer.py /usr/local/lib/radgate/viewer.py
# OHIF under /ohif/ when its dist is mounted at build time (scripts/containers.sh mounts the
# SHA-256-checked copy scripts/ci/install-viewer.sh unpacked): the site and the ServeFolders
# entries come from imaging.gateway.viewer, merged into the Orthanc configuration. RADGATE_OHIF
# names the mounted version (part of the layer cache's key; a mount is not).
ARG RADGATE_OHIF=none
RUN if [ "${RADGATE_OHIF}" != none ]; then \
        mkdir -p /usr/share/radgate/ohif \
        && cp -a /run/radgate-ohif /usr/share/radgate/ohif/dist \
        && RADGATE_OHIF_DIST=/usr/share/radgate/ohif/dist python3 /usr/local/lib/radgate/viewer.py \
           site /usr/share/radgate/ohif/site > /tmp/viewer.json \
        && python3 -c "import json, sys; c = json.load(open(sys.argv[1])); v = json.load(open(sys.argv[2])); c['Plugins'] += v.pop('Plugins'); c.update(v); json.dump(c, open(sys.argv[1], 'w'), indent=2)" \
           /etc/radgate-orthanc/orthanc.json /tmp/viewer.json \
        && rm /tmp/viewer.json; \
    fi
# Orthanc's HTTPS (SslEnabled) with Debian's civetweb 1.15 and OpenSSL 3 crashes on the first
# connection: civetweb dlopens "libssl.so" and "libcrypto.so" and looks up a function OpenSSL 3
# renamed. docker/peers/orthanc-sslshim.c, built here (the compiler removed again), supplies it;
# with OpenSSL 3's libcrypto it is found first through LD_LIBRARY_PATH (Python and everything else
# use the versioned names).
COPY docker/peers/orthanc-sslshim.c /usr/local/src/orthanc-sslshim.c
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && mkdir -p /usr/local/lib/radgate-sslshim \
    && gcc -shared -fPIC -O2 -o /usr/local/lib/radgate-sslshim/libssl.so /usr/local/src/orthanc-sslshim.c \
       -Wl,--no-as-needed -l:libssl.so.3 \
    && ln -s "$(ldconfig -p | awk '/libcrypto\.so\.3 /{print $NF; exit}')" /usr/local/lib/radgate-sslshim/libcrypto.so \
    && test -e /usr/local/lib/radgate-sslshim/libcrypto.so \
    && apt-get purge -y --auto-remove gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
ENV LD_LIBRARY_PATH=/usr/local/lib/radgate-sslshim
COPY --chmod=0755 docker/healthcheck.py /usr/local/bin/radgate-healthcheck
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/radgate-entrypoint

# The package creates the user (its uid is not fixed): local-stack peer only.
# hadolint ignore=DL3066
USER orthanc
WORKDIR /var/lib/orthanc
VOLUME ["/var/lib/orthanc/db"]
EXPOSE 4242 8042
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=10 \
    CMD ["python3", "/usr/local/bin/radgate-healthcheck", "tcp", "127.0.0.1", "8042"]
ENTRYPOINT ["/usr/local/bin/radgate-entrypoint"]
CMD ["Orthanc", "/etc/radgate-orthanc/orthanc.json"]
