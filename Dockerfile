# syntax=docker/dockerfile:1
# The Tarn service image: `tarn up` by default; any other command with `docker run IMAGE COMMAND …`
# (the Argo manifests of `tarn export argo` run `tarn run PIPELINE` in it).
#
#   docker build -t tarn:latest .                                          # all extras, Java 17 for Spark
#   docker build --build-arg TARN_EXTRAS=postgres,s3,web -t tarn:slim .    # no Spark: no Java either
#   docker build --build-arg MAVEN_REPO=https://maven.internal/repo .      # s3a jars from a mirror
#   docker run --rm -v "$PWD/myproject:/project" tarn:latest               # the project is /project
#
# bookworm, not the newer default base: Debian bookworm is the release that packages a Java 17 runtime,
# the version both pyspark 3.5 and 4.x support.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build
ARG TARN_EXTRAS=postgres,s3,spark,web
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# Wheels for Tarn and every dependency, so the runtime stage needs no compiler and no source tree.
RUN pip wheel --wheel-dir /wheels ".[${TARN_EXTRAS}]"

# -------------------------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}
ARG TARN_EXTRAS=postgres,s3,spark,web
LABEL org.opencontainers.image.title="tarn" \
      org.opencontainers.image.description="Tarn: an event-driven data lake with declarative SQL pipelines" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    TARN_PROJECT=/project
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Java 17 (headless) only when the image carries the spark extra: pyspark starts a JVM.
# (/usr/share/man/man1 must exist for the JRE's post-install script on slim images.) Not pinned: the
# version is the base image's Debian release, which gets security updates under the same package name.
# hadolint ignore=DL3008
RUN case ",${TARN_EXTRAS}," in \
      *,spark,*) mkdir -p /usr/share/man/man1 \
        && apt-get update \
        && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
        && rm -rf /var/lib/apt/lists/* ;; \
    esac
COPY --from=build /wheels /wheels
# Pinned by construction: --no-index installs exactly the wheels built above.
# hadolint ignore=DL3013
RUN pip install --no-index --find-links /wheels "tarn[${TARN_EXTRAS}]" && rm -rf /wheels
# Spark on an s3:// lake (s3a) needs hadoop-aws of pyspark's own Hadoop version and the AWS SDK bundle it was
# built with; pyspark's wheel has neither. Fetched from Maven (SHA-1 checked) at build time; S3A_JARS=0 skips it.
ARG S3A_JARS=1
ARG MAVEN_REPO=https://repo1.maven.org/maven2
RUN if [ "${S3A_JARS}" = "1" ] && python -c "import pyspark" 2>/dev/null; then \
      MAVEN_REPO="${MAVEN_REPO}" python -m tarn.deploy.spark_jars; \
    fi
# A fixed numeric uid, so Kubernetes can enforce runAsNonRoot.
RUN groupadd --gid 10001 tarn && useradd --uid 10001 --gid tarn --create-home --shell /usr/sbin/nologin tarn \
    && mkdir -p /project && chown tarn:tarn /project
# The project (tarn.yaml, pipelines/, and the lake when its root is a local folder) is mounted here:
# a bind mount or a named volume with `docker run -v`, a ConfigMap or PersistentVolumeClaim on Kubernetes.
# (No VOLUME instruction: it would drop what derived images `COPY` or `RUN` into /project.)
WORKDIR /project
USER 10001:10001
# `tarn status` opens the project and asks the metastore: healthy when both answer.
HEALTHCHECK --interval=60s --timeout=30s --start-period=30s --retries=3 \
    CMD ["tarn", "status", "--output", "json"]
ENTRYPOINT ["tarn"]
CMD ["up"]
