# postrelay — `make help` lists the targets. The README's commands work without make.
.PHONY: help test test-race chaos bench demo lint services fuzz

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

services: ## start local PostgreSQL, RabbitMQ, Redis and NATS if they are down
	.ci/services

test: ## every test with -race, then the serial fault tests: PostgreSQL restart, RabbitMQ and NATS stopped (the README's test command)
	bash .ci/test

test-race: test ## same as test

chaos: services ## the fault suite with a figures table per fault: ROUNDS=10 OUTAGE=20s make chaos
	POSTRELAY_CHAOS_ROUNDS=$${ROUNDS:-10} POSTRELAY_OUTAGE=$${OUTAGE:-20s} bash .ci/chaos-summary

fuzz: ## run each fuzz target for 30 s
	go test -run xxx -fuzz FuzzParseURL -fuzztime 30s ./adapters
	go test -run xxx -fuzz FuzzLoadConfig -fuzztime 30s ./adapters
	go test -run xxx -fuzz FuzzSchemaName -fuzztime 30s ./engine
	go test -run xxx -fuzz FuzzDecodeMetadata -fuzztime 30s ./engine

bench: services ## every benchmark scenario; rewrites bench/README.md
	go run ./bench all

demo: ## the main job: write and relay records (local PostgreSQL, memory broker)
	bash .ci/demo

lint: ## gofmt and go vet
	test -z "$$(gofmt -l .)"
	go vet ./...
