import { describe, expect, it } from 'vitest';
import { NO_VALUE, renderTemplate } from '../../src/select/template.js';

const vars = { nodeName: 'node-1', podName: 'nsc-7f9', app: 'firewall' };

describe('renderTemplate (Go text/template subset)', () => {
  it('renders a field reference against the request labels', () => {
    expect(renderTemplate('{{.nodeName}}', vars)).toBe('node-1');
  });

  it('allows spaces inside the action', () => {
    expect(renderTemplate('{{ .podName }}', vars)).toBe('nsc-7f9');
  });

  it('renders any key and keeps the surrounding text', () => {
    expect(renderTemplate('prefix-{{.app}}-{{ .nodeName }}.local', vars)).toBe('prefix-firewall-node-1.local');
  });

  it('prints "<no value>" for a missing key, as Go does for a map', () => {
    expect(NO_VALUE).toBe('<no value>');
    expect(renderTemplate('{{.clusterName}}', vars)).toBe('<no value>');
    expect(renderTemplate('x-{{.missing}}', {})).toBe('x-<no value>');
  });

  it('returns plain text unchanged', () => {
    expect(renderTemplate('vpn-gateway', vars)).toBe('vpn-gateway');
    expect(renderTemplate('', vars)).toBe('');
    expect(renderTemplate('a }} b', vars)).toBe('a }} b');
  });

  it('returns the literal for malformed templates', () => {
    for (const bad of ['{{.nodeName', '{{}}', '{{ }}', 'a {{ b', '{{/* unclosed comment }}']) {
      expect(renderTemplate(bad, vars)).toBe(bad);
    }
  });

  it('returns the literal for constructs it does not execute', () => {
    for (const t of ['{{printf "%s" .app}}', '{{.app | len}}', '{{.app.sub}}', '{{.app-name}}', '{{$x}}', '{{. app}}']) {
      expect(renderTemplate(t, vars)).toBe(t);
    }
  });

  it('supports trim markers and comments', () => {
    expect(renderTemplate('a   {{- .app -}}   b', vars)).toBe('afirewallb');
    expect(renderTemplate('a{{/* why */}}b', vars)).toBe('ab');
    expect(renderTemplate('a {{- /* why */ -}} b', vars)).toBe('ab');
  });

  it('prints the whole map for {{.}} like fmt, keys sorted', () => {
    expect(renderTemplate('{{.}}', { b: '2', a: '1' })).toBe('map[a:1 b:2]');
    expect(renderTemplate('{{.}}', {})).toBe('map[]');
  });

  it('does not read inherited properties as labels', () => {
    expect(renderTemplate('{{.constructor}}', {})).toBe('<no value>');
  });
});
