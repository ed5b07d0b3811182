#!/usr/bin/env node
import '../dist/src/node/polyfill.js'
import { main } from '../dist/src/node/cli/main.js'

process.exitCode = await main(process.argv)
