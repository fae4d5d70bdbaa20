# Quick start: `make dev` serves the gateway on 127.0.0.1:8787; `make test`
# runs the whole suite. Both bootstrap whatever is missing first.
.PHONY: dev test build bootstrap clean

bootstrap:
	@scripts/bootstrap.sh

build: bootstrap
	@scripts/build.sh

dev: build
	node_modules/.bin/wrangler dev -c wrangler.dev.toml --ip 127.0.0.1 --port 8787 $(ARGS)

test:
	@scripts/test.sh

clean:
	rm -rf build target .wrangler
