# Test only (make compose-check): Debian's redis-server in place of redis:7.4-alpine.
# Like the official image: `sh` and `redis-server` on PATH, data in /data (the
# compose file's volume), not root.
ARG ROOTFS
FROM ${ROOTFS}
RUN mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
CMD ["redis-server"]
