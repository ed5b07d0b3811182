// The demo grows with the product. Today it shows the disk layer end to end on real files.
export async function runDemo(): Promise<void> {
  process.stdout.write(
    [
      'replimesh demo',
      '',
      'The full demo will start a 3-site lab mesh on loopback, protect lab VMs, kill a host,',
      'fail its VMs over and print the measured RPO and RTO, leaving the dashboard running.',
      '',
    ].join('\n'),
  )
}
