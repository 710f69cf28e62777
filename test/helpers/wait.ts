export { waitFor, FatalError } from '../../src/util/wait-for.js';
