// Every CLI command, one module each. Add new commands here.
import type { CommandModule } from 'yargs';
import { infoCommand } from './info.js';
import { evalCommand } from './eval.js';
import { ckaCommand } from './cka.js';
import { tileCommand } from './tile.js';
import { embedCommand } from './embed.js';
import { distillCommand } from './distill.js';
import { demoCommand } from './demo.js';
import { protocolCommand } from './protocol.js';
import { setupCommand } from './setup.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<any, any>[] = [
  infoCommand,
  evalCommand,
  ckaCommand,
  tileCommand,
  embedCommand,
  distillCommand,
  demoCommand,
  protocolCommand,
  setupCommand,
];
