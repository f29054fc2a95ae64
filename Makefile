# The only Makefile. `make` builds the three services; `make test` installs what
# is missing, then runs every test, plainly and under ASan+UBSan; `make run`
# starts the stack. SANITIZE=address,undefined builds into build/sanitize.

SANITIZE ?=
ifeq ($(SANITIZE),)
BUILD ?= build
else
BUILD ?= build/sanitize
endif

CC      ?= gcc
# V=1 shows the full commands.
Q       := $(if $(V),,@)
PKGS    := libwebsockets libnats libprotobuf-c jansson libjwt libcrypto
CFLAGS  := -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -g -O2 -Wall -Wextra -Werror -Wshadow \
           -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith -Wsign-compare -fno-common -MMD -MP
ifneq ($(SANITIZE),)
CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -O1
LDFLAGS += -fsanitize=$(SANITIZE)
endif
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) libpq 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
PQ_LIBS    = $(shell pkg-config --libs libpq 2>/dev/null)
SIO_LIBS   = $(shell pkg-config --libs libwebsockets jansson 2>/dev/null)

GEN_C   := $(BUILD)/gen/chat.pb-c.c
GEN_H   := $(BUILD)/gen/chat.pb-c.h

# Include folders per room: each binary sees its own headers and lib/'s, and
# nothing else (messaging and presence never see the edge's). The edge's
# protocol layers (engineio/, socketio/, server/) do not see the generated
# protobuf headers either. A file includes another room's header by its
# room ("engineio/session.h"); tests/layers/check.sh checks which may.
INC := -Ilib -I$(BUILD)/gen
$(BUILD)/obj/services/edge/%.o: INC := -Ilib -Iservices/edge -I$(BUILD)/gen
$(BUILD)/obj/services/edge/engineio/%.o: INC := -Ilib -Iservices/edge
$(BUILD)/obj/services/edge/socketio/%.o: INC := -Ilib -Iservices/edge
$(BUILD)/obj/services/edge/server/%.o: INC := -Ilib -Iservices/edge
$(BUILD)/obj/examples/%.o: INC := -Ilib -Iservices/edge
$(BUILD)/obj/services/messaging/%.o: INC := -Ilib -Iservices/messaging -I$(BUILD)/gen
$(BUILD)/obj/services/presence/%.o: INC := -Ilib -Iservices/presence -I$(BUILD)/gen
$(BUILD)/obj/tests/unit/%.o: INC := -Ilib -Iservices/edge -I$(BUILD)/gen
$(BUILD)/obj/tests/unit/test_roster.o: INC := -Ilib -Iservices/presence
$(BUILD)/obj/tests/unit/test_handoff.o: INC := -Ilib -Iservices/presence -I$(BUILD)/gen

LIB_BASE := lib/log.c lib/mem.c lib/map.c lib/ids.c
LIB_SRC  := $(LIB_BASE) lib/config.c lib/bus.c lib/streams.c lib/metrics.c lib/admin.c lib/msgtype.c lib/bucket.c \
            lib/stop.c
# The protocol layers as a library of their own: Engine.IO, Socket.IO and the
# server with its transports, on lws and jansson only (docs/socketio-library.md).
SIO_SRC  := services/edge/engineio/eio.c services/edge/engineio/frame.c services/edge/engineio/session.c \
            services/edge/socketio/sio.c services/edge/socketio/sock.c \
            services/edge/server/server.c services/edge/server/http.c services/edge/server/ws.c \
            services/edge/server/polling.c lib/wheel.c lib/wheel_lws.c $(LIB_BASE)
SIO_LIB  := $(BUILD)/lib/libchatsio.a
CHAT_SRC := services/edge/chat/chat_socks.c services/edge/chat/chat_events.c services/edge/chat/chat_nats.c \
            services/edge/chat/chat_valid.c services/edge/chat/chat_json.c services/edge/chat/chat_wire.c \
            services/edge/chat/auth.c services/edge/chat/relay.c services/edge/chat/chat_records.c \
            services/edge/chat/chat_recovery.c services/edge/chat/recovery.c services/edge/chat/online.c \
            services/edge/chat/chat_online.c services/edge/chat/chat_interest.c
EDGE_SRC := services/edge/main.c services/edge/site.c services/edge/abuse.c services/edge/conform/conform.c \
            $(CHAT_SRC)
DB_SRC  := lib/db.c
MSG_SRC := services/messaging/main.c services/messaging/messaging.c services/messaging/store.c \
            services/messaging/history.c services/messaging/histq.c services/messaging/guard.c \
            services/messaging/quota.c services/messaging/seen.c $(DB_SRC)
PRS_SRC := services/presence/main.c services/presence/presence.c services/presence/roster.c \
            services/presence/handoff.c services/presence/lease.c services/presence/replica.c \
            services/presence/userdb.c $(DB_SRC)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
BINS := $(BUILD)/bin/chat-edge $(BUILD)/bin/chat-messaging $(BUILD)/bin/chat-presence $(BUILD)/bin/chat-tap \
        $(BUILD)/bin/sio-echo
UNIT_TESTS := $(BUILD)/tests/test_eio $(BUILD)/tests/test_sio $(BUILD)/tests/test_auth $(BUILD)/tests/test_roster \
              $(BUILD)/tests/test_handoff \
              $(BUILD)/tests/test_chat_valid $(BUILD)/tests/test_wheel \
              $(BUILD)/tests/test_chat_wire $(BUILD)/tests/test_session $(BUILD)/tests/test_histq \
              $(BUILD)/tests/test_quota $(BUILD)/tests/test_seen $(BUILD)/tests/test_recovery \
              $(BUILD)/tests/test_online

.PHONY: all test test-unit test-e2e test-browser test-sanitize test-run test-deploy chaos deps run format clean clean-state
all: $(BINS)

$(GEN_C) $(GEN_H) &: proto/chat.proto
	@mkdir -p $(BUILD)/gen
	@echo "  PROTOC  $<"
	$(Q)protoc-c --proto_path=proto --c_out=$(BUILD)/gen $<

$(BUILD)/obj/%.o: %.c | $(GEN_H)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) $(INC) $(PKG_CFLAGS) -c $< -o $@

$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(filter-out -Wmissing-prototypes,$(CFLAGS)) -I$(BUILD)/gen $(PKG_CFLAGS) -c $< -o $@

GEN_O := $(BUILD)/obj/gen/chat.pb-c.o

$(SIO_LIB): $(call obj,$(SIO_SRC))
	@mkdir -p $(dir $@)
	@echo "  AR      $@"
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/bin/chat-edge: $(call obj,$(EDGE_SRC) $(LIB_SRC)) $(GEN_O) $(SIO_LIB)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lpthread

# The example app links the protocol library and nothing else of ours: the
# proof that it builds without nats.c, libpq or any chat file.
$(BUILD)/bin/sio-echo: $(call obj,examples/echo/echo.c) $(SIO_LIB)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(SIO_LIBS)

$(BUILD)/bin/chat-messaging: $(call obj,$(MSG_SRC) $(LIB_SRC)) $(GEN_O)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(PQ_LIBS) -lpthread

$(BUILD)/bin/chat-presence: $(call obj,$(PRS_SRC) $(LIB_SRC)) $(GEN_O)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(PQ_LIBS) -lpthread

$(BUILD)/bin/chat-tap: $(call obj,tools/tap/main.c $(LIB_SRC)) $(GEN_O)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lpthread

# Unit tests: pure modules only (test_session: the Engine.IO session with a
# fake transport, on lws's loop but no socket); no nats or libpq.
$(BUILD)/tests/test_eio: $(call obj,tests/unit/test_eio.c services/edge/engineio/eio.c lib/mem.c lib/log.c)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs cmocka)
$(BUILD)/tests/test_sio: $(call obj,tests/unit/test_sio.c services/edge/socketio/sio.c lib/mem.c lib/log.c)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs cmocka jansson)
$(BUILD)/tests/test_auth: $(call obj,tests/unit/test_auth.c services/edge/chat/auth.c lib/ids.c lib/mem.c lib/log.c)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs cmocka jansson libjwt libcrypto)
$(BUILD)/tests/test_recovery: $(call obj,tests/unit/test_recovery.c services/edge/chat/recovery.c lib/ids.c lib/mem.c lib/log.c)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs cmocka jansson libcrypto)
$(BUILD)/tests/test_chat_valid: $(call obj,tests/unit/test_chat_valid.c services/edge/chat/chat_valid.c lib/msgtype.c \
                                   services/edge/chat/chat_json.c lib/ids.c lib/mem.c lib/log.c)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs cmocka jansson)
$(BUILD)/tests/test_roster: $(call obj,tests/unit/test_roster.c services/presence/roster.c lib/map.c lib/mem.c lib/log.c)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs cmocka)

$(BUILD)/tests/test_handoff: $(call obj,tests/unit/test_handoff.c services/presence/handoff.c services/presence/roster.c \
                                lib/map.c lib/mem.c lib/log.c) $(GEN_O)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs cmocka libprotobuf-c)

$(BUILD)/tests/test_chat_wire: $(call obj,tests/unit/test_chat_wire.c services/edge/chat/chat_wire.c \
                                  services/edge/chat/chat_json.c lib/msgtype.c lib/mem.c lib/log.c) $(GEN_O)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs cmocka jansson libprotobuf-c)
$(BUILD)/tests/test_online: $(call obj,tests/unit/test_online.c services/edge/chat/online.c \
                               services/edge/chat/chat_wire.c services/edge/chat/chat_json.c lib/msgtype.c \
                               lib/mem.c lib/log.c) $(GEN_O)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs cmocka jansson libprotobuf-c)
$(BUILD)/obj/tests/unit/test_histq.o $(BUILD)/obj/tests/unit/test_quota.o $(BUILD)/obj/tests/unit/test_seen.o: \
  INC := -Ilib -Iservices/messaging
$(BUILD)/tests/test_histq: $(call obj,tests/unit/test_histq.c services/messaging/histq.c lib/map.c lib/mem.c lib/log.c)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs cmocka)
$(BUILD)/tests/test_quota: $(call obj,tests/unit/test_quota.c services/messaging/quota.c lib/map.c lib/mem.c lib/log.c)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs cmocka)
$(BUILD)/tests/test_seen: $(call obj,tests/unit/test_seen.c services/messaging/seen.c lib/map.c lib/mem.c lib/log.c)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs cmocka)
$(BUILD)/tests/test_wheel: $(call obj,tests/unit/test_wheel.c lib/wheel.c)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs cmocka)
$(BUILD)/tests/test_session: $(call obj,tests/unit/test_session.c) $(SIO_LIB)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs cmocka) $(SIO_LIBS)

# Installs missing Debian packages and the pinned npm packages: `deps` what
# `make test` needs, `deps-run`, `deps-bench`, `deps-deploy`, ... only what that
# target needs (scripts/deps.sh).
deps:
	@scripts/deps.sh all
deps-%:
	@scripts/deps.sh $*

# The deployment test runs once, in the plain pass: it builds its own image.
test: deps
	scripts/check-compose.sh
	$(MAKE) test-fuzz
	$(MAKE) all test-layers test-unit test-types test-integration test-conformance test-e2e test-browser bench-smoke test-run
	$(MAKE) test-deploy
	$(MAKE) SANITIZE=address,undefined all test-unit test-integration test-conformance test-e2e test-browser

# A sanitizer build's UBSan report fails the test (it only prints by default).
test-unit: $(UNIT_TESTS)
	@for t in $(UNIT_TESTS); do echo "== $$t"; \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 $$t || exit 1; done

# Integration: the real chat-presence against a real nats-server and a throwaway
# PostgreSQL, then replicas of it against a 3-node nats-server cluster
# (tests/integration/run.sh), no mocks.
.PHONY: test-integration
$(BUILD)/tests/presence_test: $(call obj,tests/integration/presence_test.c) $(GEN_O)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs libnats libprotobuf-c) -lpthread
$(BUILD)/tests/presence_ha_test: $(call obj,tests/integration/presence_ha_test.c) $(GEN_O)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs libnats libprotobuf-c) -lpthread
test-integration: $(BUILD)/bin/chat-presence $(BUILD)/tests/presence_test $(BUILD)/tests/presence_ha_test
	PRESENCE_BIN=$(abspath $(BUILD)/bin/chat-presence) PRESENCE_TEST=$(abspath $(BUILD)/tests/presence_test) \
	  PRESENCE_HA_TEST=$(abspath $(BUILD)/tests/presence_ha_test) \
	  LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp):print_suppressions=0 \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 tests/integration/run.sh

# The layer check: which room may include which (tests/layers/check.sh), and
# that it catches planted violations.
.PHONY: test-layers
test-layers:
	tests/layers/check.sh
	tests/layers/check.sh --selftest

# The TypeScript declarations of the events (clients/typescript/chat.d.ts)
# type-check with socket.io-client, and the example's deliberate mistakes fail.
.PHONY: test-types
test-types:
	cd clients/typescript && npx --no-install tsc -p . && echo "types: clients/typescript/chat.d.ts and example.ts type-check"

# The official Engine.IO v4 / Socket.IO v5 suites from ../shared/conformance
# (skipped, saying so, when they are not there); CONFORMANCE_RUNS=10 repeats them.
.PHONY: test-conformance
test-conformance: $(BUILD)/bin/chat-edge
	CHAT_EDGE_BIN=$(abspath $(BUILD)/bin/chat-edge) \
	  LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp):print_suppressions=0 \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 tests/conformance/run.sh

test-e2e: $(BINS)
	cd tests/e2e && CHAT_EDGE_BIN=$(abspath $(BUILD)/bin/chat-edge) \
	  LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp):print_suppressions=0 \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 npm test

# The chaos test alone, longer than in make test's e2e run: three rounds of
# killing a NATS node, the active presence, a messaging replica and an edge
# while clients chat (tests/e2e/chaos.test.mjs; CHAOS_ROUNDS to change).
chaos: deps-test $(BINS)
	cd tests/e2e && CHAT_EDGE_BIN=$(abspath $(BUILD)/bin/chat-edge) CHAOS_ROUNDS=$${CHAOS_ROUNDS:-3} \
	  LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp):print_suppressions=0 \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 node --test --test-force-exit --test-reporter=tap chaos.test.mjs

# The demo page in headless Chromium (Debian's) against the real stack; it saves
# its screenshots in build/screenshots/ on every run.
test-browser: $(BINS)
	cd tests/browser && CHAT_EDGE_BIN=$(abspath $(BUILD)/bin/chat-edge) \
	  LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp):print_suppressions=0 \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 npm test

# conversation:list at 1,000,000 stored messages (tests/e2e/perf-conversations.mjs):
# prints `figure:` lines; a few minutes, not part of `make test`.
.PHONY: perf-conversations
perf-conversations: $(BINS)
	cd tests/e2e && CHAT_EDGE_BIN=$(abspath $(BUILD)/bin/chat-edge) node perf-conversations.mjs

# The README's pictures of the demo page: the browser test's screenshots,
# copied into docs/img/ once it passed.
.PHONY: screenshots
screenshots: deps-browser
	rm -rf build/screenshots
	$(MAKE) test-browser
	mkdir -p docs/img
	cp build/screenshots/*.png docs/img/
	@ls -l docs/img/

# `make run` as a user meets it (tests/run/): free ports, a token, the dev-login
# edge on loopback, and the error a second stack on taken ports gets.
test-run: $(BINS)
	tests/run/run.test.sh

# The image built and the Compose stack run for real, on a dockerd of the
# test's own, and driven through the load balancer (tests/deploy/run.sh; root).
test-deploy: deps-deploy
	tests/deploy/run.sh

run: deps-run
	$(MAKE) all
	scripts/run.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

# Wipes what make run keeps between runs (NATS and PostgreSQL data, the dev secret).
clean-state:
	rm -rf var

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---------------------------------------------------------------------------
# Fuzzing (tests/fuzz/): libFuzzer targets built with clang, ASan and UBSan,
# for every parser of client input. Only the pure modules are linked (no lws,
# nats or libpq). `make fuzz` runs each target for FUZZ_SECONDS, one at a
# time, on build/fuzz/corpus-<target> (seeded from tests/fuzz/corpus/<target>,
# kept between runs; the repository is never written), with the dictionary
# tests/fuzz/fuzz_<target>.dict when there is one; `make test-fuzz` runs
# each for 5 s, and `make test` does too. Logs go to build/fuzz/fuzz_<target>.log,
# crash inputs to build/fuzz/artifacts/. A target passes when libFuzzer exits 0.
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_DIR     := build/fuzz
FUZZ_TARGETS := eio sio chat jwt recovery
FUZZ_BINS    := $(patsubst %,$(FUZZ_DIR)/fuzz_%,$(FUZZ_TARGETS))
FUZZ_CFLAGS   = $(filter -std=% -D% -W%,$(CFLAGS)) -Ilib -Iservices/edge -I$(BUILD)/gen $(PKG_CFLAGS) -g -O1 \
                -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined

FUZZ_eio_SRC  := services/edge/engineio/eio.c lib/mem.c lib/log.c
FUZZ_sio_SRC  := services/edge/socketio/sio.c lib/mem.c lib/log.c
FUZZ_chat_SRC := services/edge/chat/chat_valid.c services/edge/chat/chat_json.c lib/msgtype.c lib/ids.c lib/mem.c lib/log.c
FUZZ_jwt_SRC  := services/edge/chat/auth.c lib/ids.c lib/mem.c lib/log.c
FUZZ_recovery_SRC := services/edge/chat/recovery.c lib/ids.c lib/mem.c lib/log.c
FUZZ_eio_LIBS  :=
FUZZ_sio_LIBS   = $(shell pkg-config --libs jansson)
FUZZ_chat_LIBS  = $(shell pkg-config --libs jansson)
FUZZ_jwt_LIBS   = $(shell pkg-config --libs jansson libjwt libcrypto)
FUZZ_recovery_LIBS = $(shell pkg-config --libs jansson libcrypto)

.PHONY: fuzz test-fuzz
$(FUZZ_DIR)/fuzz_eio: $(FUZZ_eio_SRC)
$(FUZZ_DIR)/fuzz_sio: $(FUZZ_sio_SRC)
$(FUZZ_DIR)/fuzz_chat: $(FUZZ_chat_SRC)
$(FUZZ_DIR)/fuzz_jwt: $(FUZZ_jwt_SRC)
$(FUZZ_DIR)/fuzz_recovery: $(FUZZ_recovery_SRC)
# Coarse but safe: any header of edge or lib rebuilds the targets.
$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(wildcard services/edge/*/*.h lib/*.h) | $(GEN_H)
	@mkdir -p $(dir $@)
	@echo "  FUZZCC  $@"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_$*_SRC) $(FUZZ_$*_LIBS)

# $(1): seconds per target. Runs every target (the corpus grows in place),
# prints its runs and exec/s, then one summary line; fails if any target did.
define fuzz_run
	@mkdir -p $(FUZZ_DIR)/artifacts; pass=0; fail=0; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/corpus-$$t; cp tests/fuzz/corpus/$$t/* $(FUZZ_DIR)/corpus-$$t/; \
	  log=$(FUZZ_DIR)/fuzz_$$t.log; dict=tests/fuzz/fuzz_$$t.dict; \
	  if UBSAN_OPTIONS=print_stacktrace=1 $(FUZZ_DIR)/fuzz_$$t -max_total_time=$(1) -timeout=10 \
	       $$([ -f $$dict ] && echo -dict=$$dict) \
	       -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/artifacts/fuzz_$$t- \
	       $(FUZZ_DIR)/corpus-$$t >$$log 2>&1; then \
	    pass=$$((pass + 1)); res=ok; \
	  else \
	    fail=$$((fail + 1)); res="FAILED (see $$log)"; tail -n 40 $$log; \
	  fi; \
	  echo "fuzz_$$t: $$res, $(1) s, $$(sed -n 's/^stat::number_of_executed_units: *//p' $$log) runs," \
	       "$$(sed -n 's/^stat::average_exec_per_sec: *//p' $$log) exec/s," \
	       "corpus $$(ls $(FUZZ_DIR)/corpus-$$t | wc -l) inputs"; \
	done; \
	echo "fuzz: $$pass passed, $$fail failed"; [ $$fail -eq 0 ]
endef

fuzz: $(FUZZ_BINS)
	$(call fuzz_run,$(FUZZ_SECONDS))

test-fuzz: $(FUZZ_BINS)
	$(call fuzz_run,5)

# The issue asks `make test` to run the fuzz targets briefly, so they cannot rot.
test: test-fuzz

# ==== bench: BEGIN (load generator bench/chatload and the Node reference; see bench/run.sh) ====
# `make bench` starts a private stack (PostgreSQL, NATS, the three services,
# the Node reference) and runs every scenario against our services and the
# Node reference; `make bench-smoke` (part of `make test`) runs each scenario
# against our stack only, tiny and short, and fails unless each one produced
# nonzero figures.
BENCH_SRC := bench/chatload.c bench/load_client.c bench/load_util.c
$(BUILD)/bin/chatload: $(call obj,$(BENCH_SRC))
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs libwebsockets jansson libjwt)

.PHONY: bench bench-smoke
bench: deps-bench
	$(MAKE) all $(BUILD)/bin/chatload
	BIN_DIR=$(abspath $(BUILD)/bin) bench/run.sh full
bench-smoke: $(BINS) $(BUILD)/bin/chatload
	BIN_DIR=$(abspath $(BUILD)/bin) bench/run.sh smoke
# ==== bench: END ====
