# One Flask app, an image for each of its Dockerfiles. `make` lists the targets.

# The project's name (PROJECT_NAME) and WSGI entry point (WSGI_APP), from the one file that holds them.
ifeq ($(wildcard project.env),)
$(error project.env is missing: it names the project (PROJECT_NAME=...) and its entry point (WSGI_APP=...); restore it with git checkout project.env)
endif
# Compose and Kustomize read the file too, each its own way: the line must hold the name alone.
NAME_PATTERN := [a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?
ifeq ($(shell grep -Ex 'PROJECT_NAME=$(NAME_PATTERN)' project.env),)
$(error project.env needs one line PROJECT_NAME=name, with nothing else on it (no quotes, spaces or comment): a name Docker and Kubernetes both accept, of lowercase letters, digits and hyphens, at most 63, starting and ending with a letter or digit)
endif
# A dotted module, a colon, a name, and () for a factory called without arguments: nothing Compose
# would unquote or cut at a #, nor the shell split, and what gunicorn and flask --app both accept.
ENTRY_PATTERN := [A-Za-z_][A-Za-z0-9_]*([.][A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*([(][)])?
ifeq ($(shell grep -Ex 'WSGI_APP=$(ENTRY_PATTERN)' project.env),)
$(error project.env needs one line WSGI_APP=module:name, with nothing else on it (no quotes, spaces or comment): the WSGI entry point, module:app for an app object or module:create_app() for a factory, the module found in src/)
endif
include project.env
ifeq ($(shell echo '$(PROJECT_NAME)' | grep -Ex '$(NAME_PATTERN)'),)
$(error PROJECT_NAME="$(PROJECT_NAME)" is not a name Docker and Kubernetes both accept: lowercase letters, digits and hyphens, at most 63, starting and ending with a letter or digit)
endif
ifeq ($(shell echo '$(WSGI_APP)' | grep -Ex '$(ENTRY_PATTERN)'),)
$(error WSGI_APP="$(WSGI_APP)" is not a WSGI entry point: module:app for an app object or module:create_app() for a factory)
endif
# The docker command; set DOCKER="sudo docker" or DOCKER=podman where that is what you use.
DOCKER ?= docker
# The podman command `make kube-play` starts the pod spec with: DOCKER's when it is Podman.
PODMAN ?= $(if $(filter podman,$(ENGINE)),$(DOCKER),podman)
# Image name; the variants are its tags: $(IMAGE):production, $(IMAGE):secure and the others the table below lists.
IMAGE ?= $(PROJECT_NAME)
# The base image of every Dockerfile; by default the one they pin, read from Dockerfile. Where it
# cannot be pulled, scripts/1-setup/base-image.sh builds a stand-in, which takes its place.
BASE_IMAGE ?= $(shell awk '/^FROM / {print $$2; exit}' Dockerfile)
# The platform to build and run for, such as linux/arm64; empty is the engine's own. Another
# architecture's runs under QEMU emulation, which `make engine` sets up. Its images are tagged with
# the architecture ($(IMAGE):secure-arm64), and its stand-in base named after it, so they never
# take the place of the engine's own.
PLATFORM ?=
# The platform the engine runs under emulation: of linux/amd64 and linux/arm64, the one that is not
# its own (linux/amd64 on Apple Silicon). Asked of the engine the first time a target needs it, then
# kept: the first use replaces this definition with the answer.
EMULATED_PLATFORM = $(eval EMULATED_PLATFORM := $$(shell DOCKER="$(DOCKER)" $(PYTHON) scripts/docker_tools.py emulated-platform 2>/dev/null))$(EMULATED_PLATFORM)
# The platform `make compare` measures beside the engine's own: the emulated one; empty for none.
# Its images are built under emulation the first time, which takes minutes.
COMPARE_PLATFORM ?= $(EMULATED_PLATFORM)
# The host port `make run` publishes on 127.0.0.1.
PORT ?= 8080
# Name of the container `make run` starts.
CONTAINER ?= $(PROJECT_NAME)
# What `make run` and `make bench` let a container use, as compose.yaml does: memory, CPUs, processes.
MEMORY ?= 256m
CPUS ?= 1
PIDS ?= 128
# Where `make scan` writes the SBOMs and reports; SCAN_STRICT=1 fails it when a part cannot run.
SCAN_DIR ?= scans
SCAN_STRICT ?=
# The variant `make up` runs with Docker Compose.
VARIANT ?= secure
# A CA bundle pip trusts during builds. By default, the host's bundle when the host trusts extra
# CAs (a TLS-inspecting proxy): it is mounted as a build secret and never stored in an image.
CA_BUNDLE ?= $(if $(wildcard /usr/local/share/ca-certificates/*.crt),/etc/ssl/certs/ca-certificates.crt)
# OCI labels stamped on every image at build time: where it comes from and which commit made it.
# The remote's URL loses any user and password or token in it: labels are public.
SOURCE_URL ?= $(or $(shell git remote get-url origin 2>/dev/null | sed -E 's|^([a-z][a-z0-9+.-]*://)[^/@]*@|\1|'),$(CURDIR))
VERSION ?= $(or $(shell git describe --tags --always --dirty 2>/dev/null),unversioned)
REVISION ?= $(or $(shell git rev-parse HEAD 2>/dev/null),unknown)
# The time of the last commit, in seconds: the images' created label and the times in their build
# history, so that building one commit twice gives the same image.
SOURCE_DATE_EPOCH ?= $(or $(shell git log -1 --format=%ct 2>/dev/null),0)
# Extra flags for every `docker build`, such as --no-cache or --pull.
BUILD_FLAGS ?=
# Where each build writes its record (base digest, packages, times), from which make push attests
# the image's provenance.
BUILD_RECORDS ?= .builds
# Where `make push` publishes, as $(REGISTRY)/$(IMAGE): by default the registry `make registry`
# runs on this machine, on REGISTRY_PORT; any registry you are logged in to works the same
# (REGISTRY=ghcr.io/acme, after docker login ghcr.io).
REGISTRY_PORT ?= 5000
REGISTRY ?= 127.0.0.1:$(REGISTRY_PORT)
# The variants `make push` publishes, each as one tag for the engine's platform and PUBLISH_PLATFORM,
# by default the emulated one.
PUBLISH ?= production secure
PUBLISH_PLATFORM ?= $(EMULATED_PLATFORM)
# The local registry's storage and log; the cosign key pairs: the newest signs, any verifies until
# make keys-retire (COSIGN_PASSWORD, from the environment, protects the private keys: read -rs
# COSIGN_PASSWORD && export COSIGN_PASSWORD, never on make's command line, which make hands on to
# every program it runs); the file of the digests `make push` published.
REGISTRY_DIR ?= .registry
KEYS_DIR ?= .keys
PUBLISHED ?= published.json
# Where `make push` writes what the overlay there reads: published.env, signer.yaml and kyverno/signer.yaml.
OVERLAY ?= deploy/published
# Set to sign keyless (in CI, with the job's OIDC identity) instead of with the key; and the identity
# `make verify` then expects: the workflow that signed, such as
# https://github.com/acme/orders/.github/workflows/ci.yml@refs/heads/main.
KEYLESS ?=
CERTIFICATE_IDENTITY ?=
# What `make verify-rebuild` rebuilds and compares: a published index or image, by its digest.
REF ?=
# Set to a folder, `make push` signs nothing and writes there the predicates for a job that only
# signs (CI's sign job); `make promote` then moves the tags. Empty: make push signs itself.
UNSIGNED ?=
# The pages whose markers get the tables of make compare and make bench: the site's reference, or
# in a copy, which has no site, its README.
COMPARE_PAGE := $(if $(wildcard docs/conf.py),docs/reference/images.md,README.md)
BENCH_PAGE := $(if $(wildcard docs/conf.py),docs/reference/measured.md,README.md)
# Where `make docs` writes the documentation site, and the port `make docs-serve` serves it on.
DOCS_BUILD ?= docs/_build/html
DOCS_PORT ?= 8000
# The Chromium `make test-docs` drives; empty for Debian's /usr/bin/chromium, installed when missing.
CHROMIUM ?=
# Python that runs the tests, and the virtual environment they run in.
PYTHON ?= python3
VENV ?= .venv
# How many tests `make test` runs at once, each in a pytest-xdist worker of its own; 0 runs them one
# by one. Most of them wait (on docker stop, health checks, slow clients) rather than compute, so
# more workers than CPUs pays. On 2 CPUs with the images cached, 4 took 5.0 minutes where one at a
# time took 12.5 just before, and on a busier machine 4 took 10.1 where 3 took 11.3.
TEST_WORKERS ?= 4

comma := ,
# The engine DOCKER runs, docker or podman (also podman-docker's `docker`): Podman is told a few
# things Docker does by itself. It builds OCI images unless asked for Docker's format, the one that
# keeps HEALTHCHECK. As root it gives a container 1,048,576 open files and processes, more than a
# host whose own limit is lower (a container, a CI sandbox) lets it set, so the limits are named.
# And under --read-only it mounts tmpfs on /run and /var/tmp too, unless told not to: only the
# hardening's own --tmpfs /tmp stays writable, as with Docker.
ENGINE := $(if $(findstring podman,$(DOCKER) $(shell $(DOCKER) --version 2>/dev/null)),podman,docker)
# Buildah takes no SOURCE_DATE_EPOCH: --timestamp gives the image, its history and every file the
# last commit's time, so that one commit builds one image there too.
BUILD_FORMAT = $(if $(filter podman,$(ENGINE)),--format docker --timestamp $(SOURCE_DATE_EPOCH))
ENGINE_RUN_FLAGS := $(if $(filter podman,$(ENGINE)),--ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --read-only-tmpfs=false)
# What a platform adds to a tag (linux/arm64 adds -arm64), and what PLATFORM adds to docker build and run.
arch_tag = $(if $(1),-$(subst /,-,$(patsubst linux/%,%,$(1))))
ARCH_TAG := $(call arch_tag,$(PLATFORM))
PLATFORM_FLAG := $(if $(PLATFORM),--platform $(PLATFORM))
# Marks the containers `make run` starts from this folder, whatever their image, so that `make stop`
# and the tests remove only those.
RUN_LABEL = make-run.project=$(CURDIR)
SECRET := $(if $(CA_BUNDLE),--secret id=ca-bundle$(comma)src=$(CA_BUNDLE))
# The image a Dockerfile's FROM names (scratch aside). Each build gives BuildKit the resolved base
# under that name (--build-context NAME=docker-image://BASE), so the Dockerfile names the real
# image and builds on a stand-in or a mirror all the same.
from_image = $(shell awk '/^FROM / && $$2 != "scratch" {print $$2; exit}' $(1))
# project.env's entry point, for a Dockerfile that asks for it (ARG WSGI_APP): $(1) is the flag,
# --build-arg for docker build or --arg for the build record. Naive names its app in its CMD.
wsgi_app_arg = $(if $(shell grep -s '^ARG WSGI_APP' $(2)),$(1) 'WSGI_APP=$(WSGI_APP)')
# The last commit's time as the created label writes it. Python, because date spells "this epoch"
# differently on Linux (-d @N) and macOS (-r N).
CREATED = $(shell $(PYTHON) -c 'import sys, time; print(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(sys.argv[1]))))' $(SOURCE_DATE_EPOCH))
# What every build is stamped with: its OCI labels, and the last commit's time for its history.
STAMP = --label org.opencontainers.image.source=$(SOURCE_URL) \
	--label org.opencontainers.image.version=$(VERSION) \
	--label org.opencontainers.image.revision=$(REVISION) \
	--label org.opencontainers.image.created=$(CREATED) \
	--build-arg SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH)
# The base image's digest as pulled (name@sha256:...), or for a stand-in built here, its ID: every
# image records its base in the OCI labels org.opencontainers.image.base.{name,digest}.
BASE_DIGEST = {{if .RepoDigests}}{{index .RepoDigests 0}}{{else}}{{.Id}}{{end}}
# The table of variants, which the scripts and the tests read too (make variants): each one's
# Dockerfile, and the hardening it runs under. Production gets no capabilities and no way to gain
# them; slim and secure also a read-only root, the lockdown line of the lesson. Every variant gets the
# same limits. The order is the lesson's. A variant is in the table when its Dockerfile is in the
# project: a copy made with copier has production and secure, and the sample all four.
DOCKERFILE_naive := Dockerfile.naive
DOCKERFILE_production := Dockerfile
DOCKERFILE_slim := Dockerfile.slim
DOCKERFILE_secure := Dockerfile.multistage
NO_PRIVILEGES := --cap-drop ALL --security-opt no-new-privileges
HARDENING_naive :=
HARDENING_production := $(NO_PRIVILEGES)
LOCKDOWN := --read-only --tmpfs /tmp $(NO_PRIVILEGES)
HARDENING_slim := $(LOCKDOWN)
HARDENING_secure := $(LOCKDOWN)
VARIANTS := $(strip $(foreach v,naive production slim secure,$(if $(wildcard $(DOCKERFILE_$(v))),$(v))))
# The targets of the variants the project does not have, and of the template's lesson and documentation
# site where they are not in the project either: make help leaves them out.
MISSING := $(filter-out $(VARIANTS),naive production slim secure)
ABSENT := $(foreach v,$(MISSING),build-$(v) run-$(v)) \
	$(if $(wildcard scripts/4-measure/lessons.py),,lessons) $(if $(wildcard docs/conf.py),,docs docs-serve test-docs)
LIMITS = --memory $(MEMORY) --cpus $(CPUS) --pids-limit $(PIDS)
BUILDS := $(addprefix build-,$(VARIANTS))
RUNS := $(addprefix run-,$(VARIANTS))

.DEFAULT_GOAL := help
.PHONY: help lesson-present docs-present engine base free-8080 compose-present variants images build $(BUILDS) run $(RUNS) up down stop logs history inspect scan compare bench \
	lessons registry registry-stop keys keys-rotate keys-retire push promote verify verify-rebuild up-published test test-unit test-integration test-emulated test-kubernetes kube-play test-template-copy docs docs-serve test-docs lint lock clean

help: ## Show this help
	@echo "Usage: make TARGET [VAR=value ...]"
	@awk -v absent=' $(strip $(ABSENT)) ' 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / && index(absent, " " $$1 " ") == 0 \
		{printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST) \
		| sed -e 's/$$(IMAGE)/$(IMAGE)/; s/$$(PORT)/$(PORT)/; s/$$(VARIANT)/$(VARIANT)/; s/$$(REGISTRY_PORT)/$(REGISTRY_PORT)/' \
			-e 's|$$(REGISTRY_DIR)|$(REGISTRY_DIR)|; s|$$(KEYS_DIR)|$(KEYS_DIR)|; s|$$(REGISTRY)|$(REGISTRY)|; s|$$(OVERLAY)|$(OVERLAY)|; s|$$(DOCS_BUILD)|$(DOCS_BUILD)|; s|$$(DOCS_PORT)|$(DOCS_PORT)|' \
			-e 's|$$(PUBLISH_PLATFORM)|$(or $(PUBLISH_PLATFORM),no other)|; s|$$(PUBLISH)|$(PUBLISH)|'
	@echo "Variables (make VAR=value): PROJECT_NAME=$(PROJECT_NAME) WSGI_APP='$(WSGI_APP)' (from project.env) DOCKER=$(DOCKER)" \
		"IMAGE=$(IMAGE) PORT=$(PORT) BASE_IMAGE=$(BASE_IMAGE)" \
		"PLATFORM=$(PLATFORM)"
	@echo "  MEMORY=$(MEMORY) CPUS=$(CPUS) PIDS=$(PIDS) (limits of make run and make bench)"
	@echo "  CONTAINER=$(CONTAINER) VARIANT=$(VARIANT) BUILD_FLAGS=$(BUILD_FLAGS) BUILD_RECORDS=$(BUILD_RECORDS) CA_BUNDLE=$(CA_BUNDLE)"
	@echo "  COMPARE_PLATFORM=$(COMPARE_PLATFORM) SCAN_DIR=$(SCAN_DIR) SCAN_STRICT=$(SCAN_STRICT)" \
		"SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) PYTHON=$(PYTHON) VENV=$(VENV)"
	@echo "  REGISTRY=$(REGISTRY) REGISTRY_PORT=$(REGISTRY_PORT) PUBLISH=$(PUBLISH) PUBLISH_PLATFORM=$(PUBLISH_PLATFORM)" \
		"REGISTRY_DIR=$(REGISTRY_DIR) KEYS_DIR=$(KEYS_DIR) PUBLISHED=$(PUBLISHED) KEYLESS=$(KEYLESS)" \
		"CERTIFICATE_IDENTITY=$(CERTIFICATE_IDENTITY) UNSIGNED=$(UNSIGNED) OVERLAY=$(OVERLAY) (make push, make verify)"

engine: ## Make sure Docker Engine with buildx and Compose runs, or Podman with DOCKER=podman, and can emulate PLATFORM (installs on Debian)
	@DOCKER="$(DOCKER)" PYTHON="$(PYTHON)" PLATFORM="$(PLATFORM)" scripts/1-setup/ensure-$(ENGINE).sh

base: engine ## Rebuild now the stand-in base image, made from Debian's packages where no registry answers
	@DOCKER="$(DOCKER)" PLATFORM="$(PLATFORM)" scripts/1-setup/base-image.sh --rebuild

build: $(BUILDS) ## Build every variant's image

build-naive: ## Build $(IMAGE):naive from Dockerfile.naive
build-production: ## Build $(IMAGE):production from Dockerfile
build-slim: ## Build $(IMAGE):slim from Dockerfile.slim
build-secure: ## Build $(IMAGE):secure from Dockerfile.multistage
# After the build, its record: what make push attests as the image's provenance (build_record.py).
# A Dockerfile with a build stage builds that stage again, from the cache the build just filled, so
# that the record lists what it installed and the image does not ship (secure's binutils).
$(BUILDS): build-%: engine
	@base=$$(DOCKER="$(DOCKER)" PLATFORM="$(PLATFORM)" PYTHON="$(PYTHON)" scripts/1-setup/base-image.sh "$(BASE_IMAGE)") || exit 1; \
	base_digest=$$($(DOCKER) image inspect --format '$(BASE_DIGEST)' $$base) || exit 1; \
	started=$$(date -u +%Y-%m-%dT%H:%M:%SZ); \
	echo "Building $(IMAGE):$*$(ARCH_TAG) from $(DOCKERFILE_$*) on $$base$(if $(PLATFORM), for $(PLATFORM))"; \
	$(DOCKER) build $(PLATFORM_FLAG) $(BUILD_FORMAT) $(BUILD_FLAGS) --file $(DOCKERFILE_$*) --tag $(IMAGE):$*$(ARCH_TAG) \
		--build-context $(call from_image,$(DOCKERFILE_$*))=docker-image://$$base $(call wsgi_app_arg,--build-arg,$(DOCKERFILE_$*)) $(SECRET) $(STAMP) \
		--label org.opencontainers.image.base.name=$$base --label org.opencontainers.image.base.digest=$${base_digest#*@} . \
	|| { echo "make: building $(IMAGE):$*$(ARCH_TAG) failed; the step marked ERROR above is the one that failed." >&2; exit 1; }; \
	stage=; if grep -Eq '^FROM .* AS build$$' $(DOCKERFILE_$*); then \
		stage=$$($(DOCKER) build --quiet $(PLATFORM_FLAG) $(BUILD_FORMAT) --file $(DOCKERFILE_$*) --target build \
			--build-context $(call from_image,$(DOCKERFILE_$*))=docker-image://$$base --build-arg SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) \
			$(SECRET) .) || exit 1; fi; \
	DOCKER="$(DOCKER)" $(PYTHON) scripts/2-build/build_record.py --records $(BUILD_RECORDS) --image $(IMAGE):$*$(ARCH_TAG) \
		--dockerfile $(DOCKERFILE_$*) --base $$base --base-digest $$base_digest --started $$started $${stage:+--build-stage $$stage} \
		--context $(call from_image,$(DOCKERFILE_$*))=docker-image://$$base $(call wsgi_app_arg,--arg,$(DOCKERFILE_$*)) --arg SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH); recorded=$$?; \
	[ -z "$$stage" ] || $(DOCKER) image rm $$stage >/dev/null; exit $$recorded

# A variant whose Dockerfile the project does not have: a copy made with copier has no naive or slim.
$(foreach v,$(MISSING),build-$(v) run-$(v)):
	@echo "make: $@ needs $(DOCKERFILE_$(lastword $(subst -, ,$@))), which this project does not have; its images are $(VARIANTS)." >&2; exit 1

run: run-secure ## Run the secure image on http://localhost:$(PORT)

run-naive: ## Run $(IMAGE):naive on http://localhost:$(PORT)
run-production: ## Run $(IMAGE):production on http://localhost:$(PORT), without capabilities
run-slim: ## Run $(IMAGE):slim on http://localhost:$(PORT), read-only and without capabilities
run-secure: ## Run $(IMAGE):secure on http://localhost:$(PORT), read-only and without capabilities
# stop comes first, so that a name taken by a container of someone else's stops make before a build.
$(RUNS): run-%: stop build-%
	@$(DOCKER) run $(PLATFORM_FLAG) --detach --name $(CONTAINER) --label "$(RUN_LABEL)" --publish 127.0.0.1:$(PORT):8080 \
		$(LIMITS) $(ENGINE_RUN_FLAGS) $(HARDENING_$*) $(IMAGE):$*$(ARCH_TAG) >/dev/null \
		|| { $(DOCKER) rm --force $(CONTAINER) >/dev/null 2>&1; \
			echo "make: $(DOCKER) could not start $(CONTAINER) (its error is above); if port $(PORT) is taken, use another: make run PORT=8081." >&2; \
			exit 1; }
	@DOCKER="$(DOCKER)" $(PYTHON) scripts/docker_tools.py wait $(PORT) $(CONTAINER) 30
	@echo "$$ curl http://localhost:$(PORT)/healthz"
	@$(PYTHON) -c 'import urllib.request; print(urllib.request.urlopen("http://localhost:$(PORT)/healthz").read().decode(), end="")'
	@echo "$(IMAGE):$*$(ARCH_TAG) is serving on http://localhost:$(PORT) (make logs, make stop)"

# Docker Compose with what compose.yaml reads from the environment.
COMPOSE = PROJECT_NAME=$(PROJECT_NAME) IMAGE=$(IMAGE) VARIANT=$(VARIANT) PORT=$(PORT) $(DOCKER) compose

# Podman has a compose command from 4.7 on, which runs docker-compose or podman-compose.
compose-present:
	@$(DOCKER) compose version >/dev/null 2>&1 || { echo "make: $(DOCKER) has no compose command (Podman 4.7 and later have one," \
		"which runs docker-compose or podman-compose, either installed); without it, make run starts the same image with the same hardening." >&2; exit 1; }

up: compose-present build-$(VARIANT) ## Run $(IMAGE):$(VARIANT) with Docker Compose (compose.yaml) and wait until healthy
	$(COMPOSE) up --detach --wait
	@echo "$(IMAGE):$(VARIANT) is serving on http://localhost:$(PORT) (make down to stop)"

down: compose-present ## Stop and remove what `make up` started
	$(COMPOSE) down --remove-orphans

stop: ## Stop and remove the container `make run` started
	@for id in $$($(DOCKER) ps --all --quiet --filter name='^/?$(CONTAINER)$$' --filter "label=$(RUN_LABEL)" 2>/dev/null); do \
		$(DOCKER) rm --force $$id >/dev/null; done
	@if [ -n "$$($(DOCKER) ps --all --quiet --filter name='^/?$(CONTAINER)$$' 2>/dev/null)" ]; then \
		echo "make: a container named $(CONTAINER) exists that make run did not start; it is left alone." \
			"Remove it (docker rm -f $(CONTAINER)) or choose another name (make run CONTAINER=...)." >&2; exit 1; fi

# The tests of the quick start's promise serve on 127.0.0.1:8080; the others take free ports. A container
# `make run` left there is stopped; anything else holding the port stops the tests before any image
# is built.
free-8080: engine
	@for id in $$($(DOCKER) ps --filter "label=$(RUN_LABEL)" --format '{{.ID}} {{.Ports}}' | awk '/:8080->/ {print $$1}'); do \
		echo "make: stopping $$($(DOCKER) inspect --format '{{.Name}}' $$id | tr -d /), the container make run left on port 8080, which the tests need."; \
		$(DOCKER) rm --force $$id >/dev/null; done
	@holder=$$($(DOCKER) ps --format '{{.Names}} {{.Ports}}' | awk '/:8080->/ {print $$1}'); \
	if [ -n "$$holder" ]; then echo "make: port 8080, which the tests serve on, is held by the container $$holder; stop it (docker stop $$holder) and run the tests again." >&2; exit 1; fi; \
	if ! $(PYTHON) -c 'import socket; socket.create_server(("127.0.0.1", 8080)).close()' 2>/dev/null; then \
		echo "make: port 8080 on 127.0.0.1, which the tests serve on, is in use by another program; stop it (ss -ltnp 'sport = :8080' names it, or lsof -i :8080 on macOS) and run the tests again." >&2; exit 1; fi

logs: ## Follow the log of the running container
	@$(DOCKER) logs --follow $(CONTAINER)

# Build whichever of the images is missing, saying so; the inspection targets need them all.
images: engine
	@log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	for v in $(VARIANTS); do $(DOCKER) image inspect $(IMAGE):$$v$(ARCH_TAG) >/dev/null 2>&1 && continue; \
		echo "$(IMAGE):$$v$(ARCH_TAG) is not built yet; building it first."; \
		$(MAKE) --no-print-directory build-$$v >"$$log" 2>&1 || { cat "$$log" >&2; exit 1; }; \
	done

history: images ## Show the layers of each image and what made them
	@for v in $(VARIANTS); do echo "== $(IMAGE):$$v$(ARCH_TAG)"; $(DOCKER) history $(IMAGE):$$v$(ARCH_TAG); echo; done

inspect: images ## Show each image's user, entrypoint, command, healthcheck, ports and environment
	@for v in $(VARIANTS); do echo "== $(IMAGE):$$v$(ARCH_TAG)"; \
		$(DOCKER) image inspect $(IMAGE):$$v$(ARCH_TAG) --format '{{json .Config}}' | $(PYTHON) -m json.tool; echo; done

scan: images $(VENV)/bin/pytest ## Scan the images with Trivy: SBOMs, vulnerabilities, secrets, misconfigurations; pip-audit
	@DOCKER="$(DOCKER)" $(VENV)/bin/python scripts/3-ship/scan.py --out $(SCAN_DIR) $(if $(SCAN_STRICT),--strict) \
		--requirements requirements.txt $(if $(filter naive,$(VARIANTS)),--report-only $(IMAGE):naive) $(foreach v,$(VARIANTS),$(IMAGE):$(v))

compare: images $(VENV)/bin/pytest ## Compare the images, also for COMPARE_PLATFORM: sizes, layers, user, files, lint
	@$(if $(COMPARE_PLATFORM),$(MAKE) --no-print-directory images PLATFORM=$(COMPARE_PLATFORM))
	@DOCKER="$(DOCKER)" $(VENV)/bin/python scripts/4-measure/compare.py --hadolint $(VENV)/bin/hadolint --page $(COMPARE_PAGE) \
		$(foreach v,$(VARIANTS),$(IMAGE):$(v)$(ARCH_TAG)=$(DOCKERFILE_$(v)) \
			$(if $(COMPARE_PLATFORM),$(IMAGE):$(v)$(call arch_tag,$(COMPARE_PLATFORM))=$(DOCKERFILE_$(v))))

# wrk loads the servers, also from inside a container's network namespace (nsenter, root); strace
# records the files secure's server opens.
bench: engine $(VENV)/bin/pytest ## Measure the images and docker init's peer in one run: builds, start-up, memory, load and its limit, slow clients, files opened (~30 min; Linux, root)
	@command -v wrk >/dev/null || { echo "Installing wrk, the load generator, from Debian's packages."; \
		apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } \
		|| { echo "make: bench needs wrk, the load generator (Debian: apt-get install wrk)." >&2; exit 1; }
	@command -v strace >/dev/null || { echo "Installing strace, which records the files a server opens, from Debian's packages."; \
		apt-get update -qq && apt-get install -y -qq strace >/dev/null; } \
		|| { echo "make: bench needs strace, which records the files a server opens (Debian: apt-get install strace)." >&2; exit 1; }
	@base=$$(DOCKER="$(DOCKER)" PYTHON="$(PYTHON)" scripts/1-setup/base-image.sh "$(BASE_IMAGE)") || exit 1; \
	DOCKER="$(DOCKER)" $(VENV)/bin/python scripts/4-measure/bench.py --base "$$base" --page $(BENCH_PAGE) \
		--memory $(MEMORY) --cpus $(CPUS) --pids-limit $(PIDS) $(if $(CA_BUNDLE),--ca-bundle $(CA_BUNDLE))

lessons: lesson-present engine $(VENV)/bin/pytest ## Measure what each practice of Dockerfile buys: build it with each undone, side by side (7 min); writes docs/reference/lessons.md
	@base=$$(DOCKER="$(DOCKER)" PYTHON="$(PYTHON)" scripts/1-setup/base-image.sh "$(BASE_IMAGE)") || exit 1; \
	DOCKER="$(DOCKER)" $(VENV)/bin/python scripts/4-measure/lessons.py --base "$$base" --hadolint $(VENV)/bin/hadolint \
		$(if $(CA_BUNDLE),--ca-bundle $(CA_BUNDLE))

# The lesson and the documentation site are the template's: a copy made with copier has neither.
lesson-present:
	@test -f scripts/4-measure/lessons.py || { echo "make: lessons measures the template's lesson, which stays in the template" \
		"this project was copied from (see README.md); this project has no naive or slim image to measure." >&2; exit 1; }

docs-present:
	@test -f docs/conf.py || { echo "make: the documentation site is the template's, which this project was copied" \
		"from; this project's documentation is its README.md, which links to the template's site." >&2; exit 1; }

registry: ## Start a registry for make push on 127.0.0.1:$(REGISTRY_PORT), its storage in $(REGISTRY_DIR) (installs it on Debian)
	@$(PYTHON) scripts/3-ship/publish.py registry start $(REGISTRY_DIR) $(REGISTRY_PORT)

registry-stop: ## Stop the registry make registry started; its storage stays
	@$(PYTHON) scripts/3-ship/publish.py registry stop $(REGISTRY_DIR)

keys: ## Make the key pair make push signs with: $(KEYS_DIR)/cosign.key, protected by COSIGN_PASSWORD, and cosign.pub
	@$(PYTHON) scripts/3-ship/publish.py keys $(KEYS_DIR)

# A rotation: make keys-rotate, make push (signs with the new key; the overlay admits both), then,
# once every image in use is signed by the new key, make keys-retire and make push again.
keys-rotate: ## Make a new key pair in $(KEYS_DIR) beside the old: it signs from now on, and both verify
	@$(PYTHON) scripts/3-ship/publish.py keys-rotate $(KEYS_DIR)

keys-retire: ## Retire every key pair in $(KEYS_DIR) but the newest: images signed only by them no longer verify
	@$(PYTHON) scripts/3-ship/publish.py keys-retire $(KEYS_DIR)

# The images pushed are those in the engine's store, as `make build` made and the tests tested them;
# one that is missing is built first. Refused, so that no provenance lies: one built from uncommitted
# changes (its version ends in -dirty), from another commit than the checkout's, with labels the
# commit does not give, without its build record, or from a checkout whose source is no URL.
# Who signed, as make verify and the admission policies check it: any public key in KEYS_DIR, or the
# keyless signer's identity.
SIGNER = $(if $(CERTIFICATE_IDENTITY),--identity $(CERTIFICATE_IDENTITY),--keys $(KEYS_DIR))
# The commands make push runs besides publish.py never get the key's password.
WITHOUT_PASSWORD = env -u COSIGN_PASSWORD
push: engine $(VENV)/bin/pytest $(if $(KEYLESS),,keys) ## Push the images $(PUBLISH) to $(REGISTRY), each one tag for this platform and $(PUBLISH_PLATFORM), signed, with SBOMs and provenance; write $(OVERLAY)'s inputs
	@$(if $(KEYLESS),$(if $(CERTIFICATE_IDENTITY),,echo "make: with KEYLESS, give CERTIFICATE_IDENTITY too: the identity that signs, which $(OVERLAY)'s admission policy admits." >&2; exit 1))
	@$(foreach v,$(PUBLISH),$(WITHOUT_PASSWORD) $(DOCKER) image inspect $(IMAGE):$(v) >/dev/null 2>&1 \
		|| $(WITHOUT_PASSWORD) $(MAKE) --no-print-directory build-$(v) || exit 1;)
	@$(foreach v,$(if $(PUBLISH_PLATFORM),$(PUBLISH)),$(WITHOUT_PASSWORD) $(DOCKER) image inspect $(IMAGE):$(v)$(call arch_tag,$(PUBLISH_PLATFORM)) \
		>/dev/null 2>&1 || $(WITHOUT_PASSWORD) $(MAKE) --no-print-directory build-$(v) PLATFORM=$(PUBLISH_PLATFORM) || exit 1;)
	@DOCKER="$(DOCKER)" $(VENV)/bin/python scripts/3-ship/publish.py push --repository $(REGISTRY)/$(IMAGE) \
		--version $(VERSION) --published $(PUBLISHED) $(if $(KEYLESS),,--keys $(KEYS_DIR)) \
		$(if $(UNSIGNED),--unsigned $(UNSIGNED)) \
		--records $(BUILD_RECORDS) --source $(SOURCE_URL) \
		$(foreach v,$(PUBLISH),$(v)=$(IMAGE):$(v)$(if $(PUBLISH_PLATFORM),$(comma)$(IMAGE):$(v)$(call arch_tag,$(PUBLISH_PLATFORM))))
	@$(VENV)/bin/python scripts/3-ship/publish.py deploy-files --published $(PUBLISHED) --overlay $(OVERLAY) $(SIGNER)

promote: $(VENV)/bin/pytest ## After make push UNSIGNED=... and the signing: move each variant's tag to its index, once its signature verifies
	@DOCKER="$(DOCKER)" $(VENV)/bin/python scripts/3-ship/publish.py promote --published $(PUBLISHED) $(SIGNER)

verify: $(VENV)/bin/pytest ## Verify what make push published: each tag, every signature, the SBOM, and the provenance by deploy/published/provenance.cue
	@DOCKER="$(DOCKER)" $(VENV)/bin/python scripts/3-ship/publish.py verify --published $(PUBLISHED) $(SIGNER)

verify-rebuild: engine $(VENV)/bin/pytest ## Verify REF=REPOSITORY@sha256:... as make verify does, rebuild it from the commit it names, compare it layer by layer
	@[ -n "$(REF)" ] || { echo "make: give the image to rebuild by its digest: make verify-rebuild REF=REPOSITORY@sha256:..." >&2; exit 1; }
	@DOCKER="$(DOCKER)" $(VENV)/bin/python scripts/3-ship/rebuild.py --ref $(REF) --source $(SOURCE_URL) $(SIGNER)

up-published: verify ## Run the secure image make push published, by its digest, with Docker Compose, once make verify passes
	$(COMPOSE) --env-file $(OVERLAY)/published.env up --detach --wait
	@echo "$$(sed -n 's/^PUBLISHED_IMAGE=//p' $(OVERLAY)/published.env) is serving on http://localhost:$(PORT) (make down to stop)"

# The table of variants for the scripts and the tests: name, Dockerfile, hardening flags.
variants:
	@$(foreach v,$(VARIANTS),echo "$(v) $(DOCKERFILE_$(v)) $(HARDENING_$(v))";)

# The test and lint environment; its pytest stands for the whole install.
$(VENV)/bin/pytest: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements.txt -r requirements-dev.txt
	@touch $@

# checkov, which test-kubernetes runs on the rendered manifests, in an environment of its own: its
# pins clash with pytest's.
CHECKOV = $(VENV)/checkov/bin/checkov
$(CHECKOV): requirements-checkov.txt
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install --quiet --require-hashes -r requirements-checkov.txt
	@touch $@

# With Podman, the tests marked docker are left out, saying so: they need Docker itself (pyproject.toml).
BUT_DOCKER = $(if $(filter podman,$(ENGINE)),and not docker)
LEFT_OUT = make: with Podman, the tests marked docker are left out: Compose, BuildKit's reproducible history, Docker's size accounting, container-structure-test and publishing need Docker itself.
LEAVE_OUT_DOCKER = $(if $(BUT_DOCKER),@echo "$(LEFT_OUT)")

test: free-8080 $(VENV)/bin/pytest ## Run every test but test-kubernetes and test-docs: unit, integration against real containers, the emulated platform's image
	$(LEAVE_OUT_DOCKER)
	$(VENV)/bin/pytest --numprocesses $(TEST_WORKERS) -m "$(strip not kubernetes and not docs $(BUT_DOCKER))"

# The unit tests, and on Linux those that read and load this machine's own ELF files (a Mac has none).
UNIT_TESTS := unit$(if $(filter Linux,$(shell uname -s)), or linux)
test-unit: $(VENV)/bin/pytest ## Run the unit tests (no Docker, no root needed)
	$(VENV)/bin/pytest -m "$(UNIT_TESTS)"

test-integration: free-8080 $(VENV)/bin/pytest ## Build the images and test them as running containers
	$(LEAVE_OUT_DOCKER)
	$(VENV)/bin/pytest -m "$(strip integration $(BUT_DOCKER))"

# `make engine` sets up the emulation first, saying so, when it is missing.
test-emulated: PLATFORM = $(EMULATED_PLATFORM)
test-emulated: engine $(VENV)/bin/pytest ## Build the secure image for the emulated platform (linux/arm64; linux/amd64 on Apple Silicon) and test it
	$(VENV)/bin/pytest -m emulated

kube-play: build-secure $(VENV)/bin/pytest ## Run the Kubernetes manifests with podman kube play against $(IMAGE):secure, prove what they ask for, take them down (needs kubectl)
	@DOCKER="$(DOCKER)" PODMAN="$(PODMAN)" $(VENV)/bin/python scripts/3-ship/kube_play.py $(IMAGE):secure

test-kubernetes: $(VENV)/bin/pytest $(CHECKOV) ## Render the Kubernetes manifests with kubectl's kustomize, check them, and test make kube-play (needs kubectl and Podman)
	CHECKOV=$(CHECKOV) $(VENV)/bin/pytest -m kubernetes

# Where test-template-copy makes its copy; it is removed first, and kept afterwards to look into.
TEMPLATE_COPY ?= /tmp/$(PROJECT_NAME)-template-copy
test-template-copy: free-8080 $(VENV)/bin/pytest ## Reshape a copy as Flask's tutorial shapes an app, then run its whole make test (11 min here, built images cached)
	rm -rf $(TEMPLATE_COPY)
	PYTHONPATH=scripts/4-measure $(VENV)/bin/python tests/factory_copy.py $(TEMPLATE_COPY)
	$(MAKE) --no-print-directory -C $(TEMPLATE_COPY) lock VENV=$(abspath $(VENV))
	# A repository of its own, as a user's copy is: the tests read its last commit.
	cd $(TEMPLATE_COPY) && git init --quiet && git add --all \
		&& git -c user.name=template -c user.email=template@localhost commit --quiet --message "A copy of $(PROJECT_NAME)"
	$(MAKE) --no-print-directory -C $(TEMPLATE_COPY) test \
		|| { echo "make: the copy in $(TEMPLATE_COPY) failed make test; its output is above." >&2; exit 1; }

# Built afresh each time: every page read again, so each warning shows, and no page left over from
# one renamed or removed.
docs: docs-present $(VENV)/bin/pytest ## Build the documentation site from docs/ into $(DOCS_BUILD); a warning (a broken link or anchor, a missing page) fails it
	rm -rf $(DOCS_BUILD)
	$(VENV)/bin/sphinx-build --fresh-env --fail-on-warning --keep-going --quiet --builder html docs $(DOCS_BUILD) \
		|| { echo "make: the documentation site did not build; each warning above names the page and line to fix." >&2; exit 1; }
	@echo "The site is in $(DOCS_BUILD); make docs-serve serves it."

docs-serve: docs ## Build the documentation site and serve it on http://127.0.0.1:$(DOCS_PORT) until Ctrl-C
	@echo "Serving the documentation on http://127.0.0.1:$(DOCS_PORT)/ (Ctrl-C stops it)"
	@$(VENV)/bin/python -m http.server --bind 127.0.0.1 --directory $(DOCS_BUILD) $(DOCS_PORT)

test-docs: docs ## Read every page of the site in Chromium: no console error, failed or outside request, broken image or link; search; a phone's width
	@[ -n "$(CHROMIUM)" ] || [ -x /usr/bin/chromium ] || { echo "Installing Chromium, the browser the test drives, from Debian's packages."; \
		apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| { echo "make: test-docs drives Chromium: install Debian's (apt-get install chromium), or name another with CHROMIUM=/path/to/chrome, such as the one $(VENV)/bin/playwright install chromium downloads." >&2; exit 1; }
	CHROMIUM="$(CHROMIUM)" $(VENV)/bin/pytest -m docs

lint: $(VENV)/bin/pytest ## Run every lint check (pre-commit: ruff, hadolint, shellcheck, schemas, zizmor)
	$(VENV)/bin/pre-commit run --all-files --show-diff-on-failure

lock: $(VENV)/bin/pytest ## Re-pin requirements*.txt with hashes from requirements*.in
	$(VENV)/bin/uv pip compile --quiet --universal --generate-hashes --python-version 3.11 --no-header \
		requirements.in -o requirements.txt
	$(VENV)/bin/uv pip compile --quiet --universal --generate-hashes --python-version 3.11 --no-header \
		requirements-dev.in -o requirements-dev.txt
	$(VENV)/bin/uv pip compile --quiet --universal --generate-hashes --python-version 3.11 --no-header \
		requirements-checkov.in -o requirements-checkov.txt

clean: stop ## Remove the images and their other-platform builds, the test environment and caches
	@$(DOCKER) image rm --force $(sort $(foreach v,$(VARIANTS),$(IMAGE):$(v) $(IMAGE):$(v)$(ARCH_TAG) \
		$(IMAGE):$(v)$(call arch_tag,$(COMPARE_PLATFORM)))) >/dev/null 2>&1 || true
	rm -rf $(VENV) .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
