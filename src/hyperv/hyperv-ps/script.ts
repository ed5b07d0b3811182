// Builds the PowerShell text of one operation. Pure: no processes here.
//
// Shape of every script (docs/disk-formats-and-hyperv.md §4 "Calling PowerShell from Node"):
//   preamble (stop on errors, no progress records, UTF-8 out), the op name, shared helpers,
//   then try { decode $p; run the body; print ConvertTo-Json -InputObject @(…) -Depth 5 -Compress }
//   catch { print {"ok":false,…} naming the failing cmdlet; exit 1 }.
//
// Values never enter the script text: they travel as one base64 blob of UTF-8 JSON that the
// script decodes with ConvertFrom-Json. Base64's alphabet cannot close a quote, so a VM named
// `x'; Remove-VM *` is just data. Look-ups compare with -eq (literal), never a -Name parameter
// that would treat `*` or `[` as wildcards.

export const PREAMBLE = [
  "$ErrorActionPreference='Stop'",
  "$ProgressPreference='SilentlyContinue'",
  '[Console]::OutputEncoding=[Text.Encoding]::UTF8',
] as const

/** Helpers every body may call. Set $script:rmKind/$script:rmData before a throw to classify it. */
const HELPERS = `
$rmKind=$null
$rmData=$null
function Find-RmVm([string]$Key) {
  $g=[guid]::Empty
  if ([guid]::TryParse($Key,[ref]$g)) { $m=@(Get-VM | Where-Object { $_.Id -eq $g }) }
  else { $m=@(Get-VM | Where-Object { $_.Name -eq $Key }) }
  if ($m.Count -eq 0) { $script:rmKind='vm-not-found'; $script:rmData=@{vm=$Key}; throw "no VM named or with id '$Key'" }
  if ($m.Count -gt 1) { throw "$($m.Count) VMs are named '$Key'; use the VM id" }
  $m[0]
}
function Wait-RmJob($Result,[string]$Method) {
  $rv=[int]$Result.ReturnValue
  if ($rv -eq 4096) {
    $job=[wmi]$Result.Job
    $deadline=(Get-Date).AddSeconds([int]$p.jobTimeoutSeconds)
    while ((2,3,4,6 -contains $job.JobState) -and (Get-Date) -lt $deadline) { Start-Sleep -Milliseconds 250; $job.PSBase.Get() }
    if ($job.JobState -ne 7) {
      $code=[int]$job.ErrorCode; if ($code -eq 0) { $code=32772 }
      $script:rmKind='wmi'; $script:rmData=@{method=$Method; returnValue=$code; jobState=[int]$job.JobState}
      throw [string]$job.ErrorDescription
    }
    return $job
  }
  if ($rv -ne 0) { $script:rmKind='wmi'; $script:rmData=@{method=$Method; returnValue=$rv; jobState=$null}; throw "$Method returned $rv" }
  $null
}
`

const CATCH = `
} catch {
  $e=$_
  $cmd=$null
  if ($e.InvocationInfo -and $e.InvocationInfo.MyCommand) { $cmd=$e.InvocationInfo.MyCommand.Name }
  $out=@{ok=$false; op=$op; error=$e.Exception.Message; cmdlet=$cmd; category=$e.CategoryInfo.Category.ToString(); errorId=$e.FullyQualifiedErrorId; kind=$rmKind; data=$rmData}
  [Console]::Out.WriteLine((ConvertTo-Json -InputObject $out -Depth 4 -Compress))
  exit 1
}
`

/** Strips indentation and blank lines: the encoded command line has a 32 K limit. */
function compact(text: string): string {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0)
    .join('\n')
}

export function encodeParams(params: unknown): string {
  return Buffer.from(JSON.stringify(params ?? {}), 'utf8').toString('base64')
}

/**
 * The whole script for one operation. `op` must be a fixed identifier of ours (checked), `body`
 * one of the fixed texts in ./ops.ts, `params` anything JSON.
 */
export function buildScript(op: string, body: string, params: unknown, extraHelpers = ''): string {
  if (!/^[a-z][a-z0-9-]*$/.test(op)) throw new TypeError(`bad operation name '${op}'`)
  const blob = encodeParams(params)
  return [
    ...PREAMBLE,
    `$op='${op}'`,
    compact(HELPERS),
    compact(extraHelpers),
    'try {',
    `$p=ConvertFrom-Json ([Text.Encoding]::UTF8.GetString([Convert]::FromBase64String('${blob}')))`,
    '$r=@(& {',
    compact(body),
    '})',
    '[Console]::Out.WriteLine((ConvertTo-Json -InputObject @($r) -Depth 5 -Compress))',
    compact(CATCH),
  ]
    .filter((l) => l.length > 0)
    .join('\n')
}

/** What goes after -EncodedCommand: base64 of the script's UTF-16LE bytes. */
export function encodeCommand(script: string): string {
  return Buffer.from(script, 'utf16le').toString('base64')
}
