// Typed models from the AsyncAPI document: node generate.mjs docs/asyncapi.yaml OUT_DIR
// writes OUT_DIR/models.ts (AsyncAPI Modelina: an interface per message payload and nested type,
// a string union per enum, `Session` the union of every frame the server sends) and
// OUT_DIR/models.dart (quicktype: classes for json_serializable, wire names kept in @JsonKey).
// Prints the names of the TypeScript models, one a line.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { TypeScriptGenerator, typeScriptDefaultModelNameConstraints } from '@asyncapi/modelina';
import yaml from 'js-yaml';
import { FetchingJSONSchemaStore, InputData, JSONSchemaInput, quicktype } from 'quicktype-core';

const [source, out] = process.argv.slice(2);
if (!source || !out) {
  console.error('usage: node generate.mjs ASYNCAPI_YAML OUT_DIR');
  process.exit(2);
}
mkdirSync(out, { recursive: true });
const text = readFileSync(source, 'utf8');

const typescript = new TypeScriptGenerator({
  modelType: 'interface',
  enumType: 'union',
  mapType: 'record', // a JSON object, not a JS Map
  rawPropertyNames: true, // the wire's names: `server_time`, `type`
  // The names are the protocol's PascalCase type names, never a (lower-case) keyword; Modelina's
  // case-blind check would turn `History` (a browser global's name) into `ReservedHistory`.
  constraints: { modelName: typeScriptDefaultModelNameConstraints({ NO_RESERVED_KEYWORDS: (name) => name }) },
  processorOptions: { interpreter: { ignoreAdditionalProperties: true } },
});
const models = await typescript.generate(text);
writeFileSync(join(out, 'models.ts'), models.map((model) => `export ${model.result}\n`).join('\n'));

// quicktype reads JSON Schema: every message payload, the rest come along by $ref.
const doc = yaml.load(text);
const json = resolve(out, 'asyncapi.json');
writeFileSync(json, JSON.stringify(doc));
const input = new JSONSchemaInput(new FetchingJSONSchemaStore());
const payloads = new Set();
for (const channel of Object.values(doc.channels)) {
  for (const message of Object.values(channel.messages)) payloads.add(message.payload.$ref.split('/').pop());
}
for (const name of payloads) await input.addSource({ name, uris: [`${json}#/components/schemas/${name}`] });
const data = new InputData();
data.addInput(input);
const dart = await quicktype({
  inputData: data,
  lang: 'dart',
  rendererOptions: { 'use-json-annotation': 'true', 'part-name': 'models' },
});
writeFileSync(join(out, 'models.dart'), dart.lines.join('\n') + '\n');

for (const model of models) console.log(model.modelName);
