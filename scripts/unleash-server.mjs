// Start a real Unleash server (unleash-server 8.2.0, installed by scripts/install-unleash).
//
// To try Unleash locally, run `rollout unleash up` instead: it starts this script for you.
//
// unleash-server ships no CLI, so this script calls its start() with a config read from the
// environment. Run it with the Node 22 binary from the install, from the install directory (or
// with ROLLOUT_UNLEASH_HOME pointing at it), e.g.:
//
//   UNLEASH_PORT=4242 UNLEASH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/unleash \
//   INIT_ADMIN_API_TOKENS='*:*.admin-secret' \
//   INIT_BACKEND_API_TOKENS='*:development.dev-secret,*:production.prod-secret' \
//   ~/.cache/model-rollout/unleash-8.2.0/node_modules/.bin/node scripts/unleash-server.mjs
//
// Environment:
//   UNLEASH_PORT           port to listen on (default 4242; 0 picks a free one, race-free)
//   UNLEASH_PORT_FILE      if set, the port actually bound is written there once listening
//   UNLEASH_HOST           interface to bind (default 127.0.0.1)
//   UNLEASH_DATABASE_URL   postgres://user[:password]@host[:port]/database
//                          (default postgres://postgres@127.0.0.1:5432/unleash); must exist
//   INIT_ADMIN_API_TOKENS, INIT_BACKEND_API_TOKENS
//                          read by Unleash itself: comma-separated `project:environment.secret`
//                          tokens created on an empty database. Plain strings passed in
//                          authentication.initApiTokens create no token in 8.2.0, hence env vars.
//   LOG_LEVEL              debug | info | warn | error (default info); logs go to stdout
import { renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

// Defaults that keep a test or demo server quiet and offline (set before Unleash reads them).
process.env.SEND_TELEMETRY ??= 'false';
process.env.CHECK_VERSION ??= 'false';

// Resolve unleash-server from the install directory, not from this script's location (the repo).
const installDir = process.env.ROLLOUT_UNLEASH_HOME ?? process.cwd();
const require = createRequire(path.join(installDir, 'package.json'));
const { start } = await import(require.resolve('unleash-server'));
const log4js = require('log4js');

// Unleash's default logger colours its output; plain lines read better in a log file.
function plainLogProvider(level) {
    log4js.configure({
        appenders: { stdout: { type: 'stdout', layout: { type: 'basic' } } },
        categories: { default: { appenders: ['stdout'], level } },
    });
    return log4js.getLogger;
}

function dbOptions(url) {
    const parsed = new URL(url);
    return {
        user: decodeURIComponent(parsed.username) || 'postgres',
        password: decodeURIComponent(parsed.password) || undefined,
        host: parsed.hostname || '127.0.0.1',
        port: Number.parseInt(parsed.port || '5432', 10),
        database: decodeURIComponent(parsed.pathname.replace(/^\//, '')) || 'unleash',
        ssl: false,
    };
}

const port = Number.parseInt(process.env.UNLEASH_PORT ?? '4242', 10);
const host = process.env.UNLEASH_HOST ?? '127.0.0.1';
const databaseUrl =
    process.env.UNLEASH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/unleash';
if (!process.env.INIT_ADMIN_API_TOKENS) {
    console.warn('unleash-server.mjs: INIT_ADMIN_API_TOKENS unset: no admin API token is created');
}

// db-migrate (run by start() on a database that needs migrations) installs a process-wide
// 'unhandledRejection' handler that calls process.exit(1). Unleash's own handler only logs, as
// it means to ("so they don't crash the process"), but db-migrate's runs too and kills the
// server. One harmless race hits it: a flag deleted right after it was created or archived
// makes the feature-lifecycle listener's insert fail a foreign key. Keep Unleash's intent.
function logUnhandledRejections(getLogger) {
    const logger = getLogger('unleash-server.mjs');
    process.removeAllListeners('unhandledRejection');
    process.on('unhandledRejection', (reason) => {
        logger.error('Unhandled promise rejection (logged, server keeps running):', reason);
    });
}

function announce(boundPort) {
    console.log(`unleash-server.mjs: listening on http://${host}:${boundPort}`);
    const portFile = process.env.UNLEASH_PORT_FILE;
    if (portFile) {
        // Write then rename, so a reader never sees a half-written file.
        writeFileSync(`${portFile}.tmp`, `${boundPort}\n`);
        renameSync(`${portFile}.tmp`, portFile);
    }
}

try {
    const db = dbOptions(databaseUrl);
    console.log(`unleash-server.mjs: starting on ${host}:${port} (database ${db.database})`);
    const getLogger = plainLogProvider(process.env.LOG_LEVEL ?? 'info');
    const unleash = await start({
        db,
        server: { port, host, unleashUrl: process.env.UNLEASH_URL ?? `http://${host}:${port}` },
        versionCheck: { enable: false },
        getLogger,
    });
    logUnhandledRejections(getLogger);
    announce(unleash.server.address().port);
} catch (error) {
    console.error('unleash-server.mjs: failed to start:', error);
    process.exit(1);
}
