'use strict';
// Shared by the client scripts: arguments, the line protocol with the Rust test that drives
// them (JSON lines on stdout, plain lines on stdin), and small waits.

const readline = require('node:readline');

/** `--name value` pairs from the command line. */
function args() {
  const out = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || argv[i + 1] === undefined) {
      throw new Error(`bad argument ${argv[i]}`);
    }
    out[argv[i].slice(2)] = argv[i + 1];
  }
  return out;
}

/** Prints one JSON object as a line on stdout (the driver parses each line). */
function emit(event, fields) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
}

const lines = readline.createInterface({ input: process.stdin });
const waiting = [];
const buffered = [];
lines.on('line', (line) => {
  const w = waiting.shift();
  if (w) w(line.trim());
  else buffered.push(line.trim());
});

/** The next line from the driver on stdin. */
function nextLine() {
  if (buffered.length) return Promise.resolve(buffered.shift());
  return new Promise((resolve) => waiting.push(resolve));
}

/** Resolves after `ms` milliseconds. */
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves true once `cond()` holds, or false after `ms` milliseconds. */
async function waitFor(cond, ms) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() >= deadline) return false;
    await sleep(10);
  }
  return true;
}

/** A message for the summary (errors can be objects without a message). */
function describe(err) {
  return err && err.message ? err.message : String(err);
}

module.exports = { args, emit, nextLine, sleep, waitFor, describe, lines };
