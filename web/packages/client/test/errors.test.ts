// The error codes of voq/1 as TypeScript knows them, against testdata/wire/error-codes.json (the
// list the Rust tests check too): a code added on one side and not the other fails here.
import { describe, expect, it } from 'vitest';
import { Code, ERROR_CODES, ERROR_TYPES, STREAM_CODES, codeName } from '../src/errors.js';
import type { ErrorCode } from '../src/errors.js';
import { parseServerEvent } from '../src/events.js';
import { loadErrorCodes } from './helpers.js';

const wire = loadErrorCodes();
const sorted = (xs: Iterable<string>) => [...xs].sort();

describe('error codes', () => {
  it('STREAM_CODES are the stream codes of the wire, name for name and number for number', () => {
    expect(Object.keys(wire.stream_codes).length).toBeGreaterThan(0);
    expect(STREAM_CODES).toEqual(wire.stream_codes);
    expect(sorted(Object.keys(STREAM_CODES))).toEqual(sorted(Object.keys(wire.stream_codes)));
  });

  it('Code holds the same numbers, and codeName names each one as the wire does', () => {
    expect(sorted(Object.values(Code).map(String))).toEqual(sorted(Object.values(wire.stream_codes).map(String)));
    for (const [name, code] of Object.entries(wire.stream_codes)) expect(codeName(code)).toBe(name);
    // Code.Cancelled is `cancelled`: the constant-style name is the wire name in PascalCase.
    for (const [key, code] of Object.entries(Code)) {
      expect(codeName(code)).toBe(key.replace(/[A-Z]/g, (c, i: number) => (i ? '_' : '') + c.toLowerCase()));
    }
    expect(codeName(0x1234)).toBe('code_4660');
  });

  it('ERROR_CODES are the event codes of the wire, both ways, each once', () => {
    expect(wire.event_codes.length).toBeGreaterThan(0);
    expect(new Set(ERROR_CODES).size).toBe(ERROR_CODES.length);
    expect(sorted(ERROR_CODES)).toEqual(sorted(wire.event_codes));
  });

  it('ERROR_TYPES are the error types of the wire', () => {
    expect(sorted(ERROR_TYPES)).toEqual(sorted(wire.error_types));
  });

  it('an error event parses with a known code typed as one, and with an unknown code from a newer server', () => {
    const known = parseServerEvent(JSON.stringify({ type: 'error', error: { type: 'invalid_request_error', code: 'item_not_found', message: 'no item' } }));
    expect(known.ok && known.event.type === 'error' && known.event.error.code).toBe('item_not_found');
    const future = parseServerEvent(JSON.stringify({ type: 'error', error: { type: 'server_error', code: 'shiny_new_code', message: '?' } }));
    expect(future.ok && future.event.type === 'error' && future.event.error.code).toBe('shiny_new_code');
    // The known codes are a closed type: a typo does not compile.
    const typed: ErrorCode = 'item_not_found';
    // @ts-expect-error — not a voq/1 error code
    const typo: ErrorCode = 'item_notfound';
    expect([typed, typo]).toHaveLength(2);
  });
});
