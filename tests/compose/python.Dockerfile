# Test only (make compose-check): stands in for python:3.11-slim, which no registry
# here can serve. ROOTFS is Debian bookworm from `debootstrap --variant=minbase`
# (with python3, python3-venv, postgresql, redis-server), `docker import`ed by check.sh.
# A venv first on PATH gives `python` and `pip` as in the official image (Debian's
# own python3 refuses `pip install` into the system, PEP 668).
ARG ROOTFS
FROM ${ROOTFS}
ENV PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8
# host-ca/: the CA certificates this host trusts beyond Debian's (check.sh copies them
# from /usr/local/share/ca-certificates; an egress proxy may sign with one); empty elsewhere.
COPY host-ca/ /usr/local/share/ca-certificates/
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
RUN update-ca-certificates >/dev/null && python3 -m venv /usr/local/python
CMD ["python"]
