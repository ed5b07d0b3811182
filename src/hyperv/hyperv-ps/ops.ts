// The fixed PowerShell bodies of each operation (wrapped by ./script.ts). They read values only
// from $p (the decoded JSON parameters) and emit objects whose properties keep the names the
// real cmdlets and WMI classes use, so ./parse.ts reads the documented shapes.
//
// [UNCONFIRMED] on a real host, to verify before production: Msvm_GuestNetworkAdapterConfiguration
// InstanceID ends with the adapter id's last segment; Get-VMIntegrationService names the VSS
// service 'VSS' (English hosts); GetRelated() from the job finds the new snapshot / reference
// point; Msvm_ComputerSystem.GetRelated('Msvm_VirtualSystemReferencePoint') lists a VM's points.

const NS = String.raw`root\virtualization\v2`

/** Disk order everywhere: by controller, skipping pass-through disks (no file to replicate). */
const DRIVES = `@(Get-VMHardDiskDrive -VM $vm | Where-Object { $_.Path -and $null -eq $_.DiskNumber } | Sort-Object ControllerType,ControllerNumber,ControllerLocation)`

const VHD_FIELDS =
  'Path,VhdFormat,VhdType,Size,FileSize,ParentPath,DiskIdentifier,LogicalSectorSize,PhysicalSectorSize,BlockSize'

/** One catalogue record per VM: the cmdlets' own objects, side by side (shallow for -Depth 5). */
export const VM_RECORD_HELPER = `
function ConvertTo-RmVmRecord($vm) {
  $drives=${DRIVES}
  $vhds=@()
  foreach ($d in $drives) {
    $path=$d.Path; $n=0
    while ($path -and $n -lt 64) {
      try { $v=Get-VHD -Path $path | Select-Object ${VHD_FIELDS} }
      catch { $v=[pscustomobject]@{Path=$path; Error=$_.Exception.Message; ParentPath=$null} }
      $vhds+=$v; $path=$v.ParentPath; $n++
    }
  }
  $adapters=@(Get-VMNetworkAdapter -VM $vm | Select-Object Name,Id,SwitchName,MacAddress,IPAddresses)
  $id=$vm.Id.ToString()
  if ($null -eq $script:rmGuest) { $script:rmGuest=@(Get-WmiObject -Namespace ${NS} -Class Msvm_GuestNetworkAdapterConfiguration) }
  $guest=@($script:rmGuest | Where-Object { $_.InstanceID -like "*$id*" } | Select-Object InstanceID,IPAddresses,Subnets,DefaultGateways,DNSServers)
  $ints=@(Get-VMIntegrationService -VM $vm | Select-Object Name,Enabled,PrimaryStatusDescription)
  [pscustomobject]@{
    VM=($vm | Select-Object Id,Name,State,Generation,ProcessorCount,MemoryStartup,Notes,Path,ConfigurationLocation,Version,CheckpointType,CreationTime)
    Drives=@($drives | Select-Object ControllerType,ControllerNumber,ControllerLocation,Path)
    Vhds=$vhds; Adapters=$adapters; Guest=$guest; IntegrationServices=$ints
  }
}
`

export const LIST_VMS = `
if ($p.vm) { $vms=@(Find-RmVm $p.vm) } else { $vms=@(Get-VM) }
foreach ($vm in $vms) { ConvertTo-RmVmRecord $vm }
`

/**
 * A recovery checkpoint (SnapshotType 32768) when RCT is available, else a full one (2).
 * ConsistencyLevel 1 asks the guest's VSS (what a production checkpoint uses), 2 is crash-only.
 * After it, each live disk is a new AVHDX whose parent is the frozen file we read.
 */
export const CREATE_POINT = `
$vm=Find-RmVm $p.vm
$rct=([version]$vm.Version) -ge ([version]'6.2')
$level=[int]$p.consistency
$vss=@(Get-VMIntegrationService -VM $vm | Where-Object { $_.Name -eq 'VSS' -and $_.Enabled })
if ($level -eq 1 -and $vss.Count -eq 0) { $level=2 }
$cs=Get-WmiObject -Namespace ${NS} -Class Msvm_ComputerSystem | Where-Object { $_.Name -eq $vm.Id.ToString() }
$svc=Get-WmiObject -Namespace ${NS} -Class Msvm_VirtualSystemSnapshotService
$ss=([wmiclass]'${NS}:Msvm_VirtualSystemSnapshotSettingData').CreateInstance()
$ss.ConsistencyLevel=$level
$ss.IgnoreNonSnapshottableDisks=$true
if ($rct) { $type=32768 } else { $type=2 }
$res=$svc.CreateSnapshot($cs,$ss.GetText(2),$type)
$job=Wait-RmJob $res 'CreateSnapshot'
if ($job) { $snap=$job.GetRelated('Msvm_VirtualSystemSettingData') | Select-Object -First 1 } else { $snap=[wmi]$res.ResultingSnapshot }
try {
  $vsms=Get-WmiObject -Namespace ${NS} -Class Msvm_VirtualSystemManagementService
  $snap.ElementName=$p.marker
  $null=Wait-RmJob $vsms.ModifySystemSettings($snap.GetText(1)) 'ModifySystemSettings'
} catch { $script:rmKind=$null; $script:rmData=$null }
$disks=@(foreach ($d in ${DRIVES}) {
  $live=Get-VHD -Path $d.Path | Select-Object ${VHD_FIELDS}
  $frozen=$null
  if ($live.ParentPath) { $frozen=Get-VHD -Path $live.ParentPath | Select-Object ${VHD_FIELDS} }
  [pscustomobject]@{Live=$live; Frozen=$frozen}
})
[pscustomobject]@{
  VmId=$vm.Id; Version=$vm.Version; Rct=$rct; ConsistencyLevel=$level; SnapshotType=$type
  Snapshot=($snap | Select-Object InstanceID,ElementName,VirtualSystemType,@{n='CreationTime';e={[Management.ManagementDateTimeConverter]::ToDateTime($_.CreationTime)}})
  Disks=$disks
}
`

/** One GetVirtualDiskChanges call per request; a failing disk reports its error, not the batch. */
export const DISK_CHANGES = `
$ims=Get-WmiObject -Namespace ${NS} -Class Msvm_ImageManagementService
foreach ($q in @($p.requests)) {
  try {
    $res=$ims.GetVirtualDiskChanges($q.path,$q.limitId,$null,[uint64]$q.offset,[uint64]$q.length)
    $null=Wait-RmJob $res 'GetVirtualDiskChanges'
    [pscustomobject]@{Path=$q.path; ReturnValue=[int]$res.ReturnValue; ProcessedByteLength=$res.ProcessedByteLength; ChangedByteOffsets=$res.ChangedByteOffsets; ChangedByteLengths=$res.ChangedByteLengths; Error=$null}
  } catch {
    $rv=$null; if ($script:rmData) { $rv=$script:rmData.returnValue }
    [pscustomobject]@{Path=$q.path; ReturnValue=$rv; ProcessedByteLength=0; ChangedByteOffsets=$null; ChangedByteLengths=$null; Error=$_.Exception.Message}
    $script:rmKind=$null; $script:rmData=$null
  }
}
`

/**
 * Ends a point. With RCT: ConvertToReferencePoint (deletes the checkpoint, merges the AVHDX) and
 * destroys this VM's older reference points except those in $p.keep. Without: DestroySnapshot.
 */
export const RELEASE_POINT = `
$vm=Find-RmVm $p.vm
$snap=Get-WmiObject -Namespace ${NS} -Class Msvm_VirtualSystemSettingData | Where-Object { $_.InstanceID -eq $p.snapshotId }
if (-not $snap) { $script:rmKind='point-gone'; throw "checkpoint '$($p.snapshotId)' of VM '$($vm.Name)' no longer exists" }
$svc=Get-WmiObject -Namespace ${NS} -Class Msvm_VirtualSystemSnapshotService
if ($p.convert) {
  $res=$svc.ConvertToReferencePoint($snap)
  $job=Wait-RmJob $res 'ConvertToReferencePoint'
  if ($job) { $ref=$job.GetRelated('Msvm_VirtualSystemReferencePoint') | Select-Object -First 1 } else { $ref=[wmi]$res.ResultingReferencePoint }
  $keep=@($ref.InstanceID) + @($p.keep)
  $rps=Get-WmiObject -Namespace ${NS} -Class Msvm_VirtualSystemReferencePointService
  $cs=Get-WmiObject -Namespace ${NS} -Class Msvm_ComputerSystem | Where-Object { $_.Name -eq $vm.Id.ToString() }
  $removed=@(foreach ($old in @($cs.GetRelated('Msvm_VirtualSystemReferencePoint'))) {
    if ($keep -notcontains $old.InstanceID) { $null=Wait-RmJob $rps.DestroyReferencePoint($old) 'DestroyReferencePoint'; $old.InstanceID }
  })
  [pscustomobject]@{ReferencePoint=($ref | Select-Object InstanceID,ReferencePointType,VirtualDiskIdentifiers,ResilientChangeTrackingIdentifiers); Removed=$removed}
} else {
  $null=Wait-RmJob $svc.DestroySnapshot($snap) 'DestroySnapshot'
  [pscustomobject]@{ReferencePoint=$null; Removed=@()}
}
`

/**
 * Compare-VM, fix what we know how to fix, Import-VM -CompatibilityReport. Register mode points
 * the drives at the replicated files; copy mode (-GenerateNewId) reads them from VhdSourcePath.
 * Switches: mapped ones are connected, a still-missing switch (MessageId 33012) is disconnected.
 */
export const REGISTER_VM = `
$cp=@{Path=$p.configPath}
if ($p.copy) { $cp.Copy=$true; $cp.GenerateNewId=$true; $cp.VhdSourcePath=$p.vhdSourcePath; $cp.VhdDestinationPath=$p.vhdDestinationPath; $cp.VirtualMachinePath=$p.vmDestinationPath }
else { $cp.Register=$true }
$r=Compare-VM @cp
if (-not $p.copy) {
  $ds=@($r.VM | Get-VMHardDiskDrive | Where-Object { $null -eq $_.DiskNumber } | Sort-Object ControllerType,ControllerNumber,ControllerLocation)
  $paths=@($p.diskPaths)
  for ($i=0; $i -lt $ds.Count -and $i -lt $paths.Count; $i++) { Set-VMHardDiskDrive -VMHardDiskDrive $ds[$i] -Path $paths[$i] }
}
foreach ($n in @($r.VM | Get-VMNetworkAdapter)) {
  $m=@($p.switchMap | Where-Object { $_.from -eq $n.SwitchName }) | Select-Object -First 1
  if ($m) { Connect-VMNetworkAdapter -VMNetworkAdapter $n -SwitchName $m.to }
}
$r=Compare-VM -CompatibilityReport $r
foreach ($inc in @($r.Incompatibilities | Where-Object { $_.MessageId -eq 33012 })) { $inc.Source | Disconnect-VMNetworkAdapter }
$r=Compare-VM -CompatibilityReport $r
$left=@($r.Incompatibilities)
if ($left.Count -gt 0) {
  $script:rmKind='incompatible'; $script:rmData=@{incompatibilities=@($left | Select-Object MessageId,Message)}
  throw (($left | ForEach-Object { "$($_.MessageId) $($_.Message)" }) -join '; ')
}
$new=Import-VM -CompatibilityReport $r
if ($p.name) { Rename-VM -VM $new -NewName $p.name; $new=Get-VM | Where-Object { $_.Id -eq $new.Id } }
ConvertTo-RmVmRecord $new
`

/**
 * Checkpoints we named (ElementName = $p.marker) that an earlier run never released: destroyed,
 * so the VM stops writing to an AVHDX. The RCT baseline is unaffected (ids are continuous).
 */
export const CLEANUP_POINTS = `
$svc=Get-WmiObject -Namespace ${NS} -Class Msvm_VirtualSystemSnapshotService
$stale=@(Get-WmiObject -Namespace ${NS} -Class Msvm_VirtualSystemSettingData | Where-Object { $_.ElementName -eq $p.marker })
foreach ($s in $stale) {
  $null=Wait-RmJob $svc.DestroySnapshot($s) 'DestroySnapshot'
  [pscustomobject]@{InstanceID=$s.InstanceID; VirtualSystemIdentifier=$s.VirtualSystemIdentifier}
}
`

/**
 * No replicated configuration file: a new VM from the catalogue entry (a new id, as New-VM
 * always gives). With $p.differencing (test failover) each disk is a new differencing child of
 * the replica's file, so the replica itself is never written.
 */
export const CREATE_VM = `
$cfg=$p.config
$nv=@{Name=$p.name; Generation=[int16]$cfg.generation; MemoryStartupBytes=[int64]$cfg.memoryBytes; NoVHD=$true}
if ($p.vmPath) { $nv.Path=$p.vmPath }
$vm=New-VM @nv
Set-VMProcessor -VM $vm -Count ([int64]$cfg.cpus)
if ($cfg.notes) { Set-VM -VM $vm -Notes $cfg.notes }
$paths=@($p.diskPaths)
for ($i=0; $i -lt $paths.Count; $i++) {
  $path=$paths[$i]
  if ($p.differencing) { $path=(New-VHD -Path @($p.childPaths)[$i] -ParentPath $paths[$i] -Differencing).Path }
  if ([int]$cfg.generation -eq 1 -and $i -eq 0) { Add-VMHardDiskDrive -VM $vm -ControllerType IDE -ControllerNumber 0 -ControllerLocation 0 -Path $path }
  else {
    if (@(Get-VMScsiController -VM $vm).Count -eq 0) { Add-VMScsiController -VM $vm }
    Add-VMHardDiskDrive -VM $vm -ControllerType SCSI -ControllerNumber 0 -Path $path
  }
}
Get-VMNetworkAdapter -VM $vm | Remove-VMNetworkAdapter
$switches=@(Get-VMSwitch | ForEach-Object { $_.Name })
foreach ($n in @($p.nics)) {
  $na=@{VM=$vm; Name=$n.name}
  if ($n.switch -and $switches -contains $n.switch) { $na.SwitchName=$n.switch }
  if ($n.mac) { $na.StaticMacAddress=$n.mac }
  Add-VMNetworkAdapter @na
}
ConvertTo-RmVmRecord (Get-VM | Where-Object { $_.Id -eq $vm.Id })
`

export const UNREGISTER_VM = `
$vm=Find-RmVm $p.vm
if ($vm.State -ne 'Off' -and $vm.State -ne 'Saved') { $script:rmKind='vm-state'; $script:rmData=@{vm=$vm.Name; state=$vm.State.ToString()}; throw 'stop it before unregistering' }
Remove-VM -VM $vm -Force
[pscustomobject]@{Removed=$vm.Id}
`

export const START_VM = `
$vm=Find-RmVm $p.vm
if ($vm.State -eq 'Running') { $script:rmKind='vm-state'; $script:rmData=@{vm=$vm.Name; state='Running'}; throw 'already running' }
Start-VM -VM $vm
[pscustomobject]@{Started=$vm.Id}
`

/** Shut down through the guest's Shutdown integration service, or cut power with -TurnOff. */
export const STOP_VM = `
$vm=Find-RmVm $p.vm
if ($vm.State -ne 'Off') {
  if ($p.force) { Stop-VM -VM $vm -TurnOff -Force } else { Stop-VM -VM $vm -Force }
}
[pscustomobject]@{Stopped=$vm.Id}
`

/** Per mapping: optional switch change, then the failover IP settings of each family. */
export const APPLY_NETWORK = `
$vm=Find-RmVm $p.vm
$all=@(Get-VMNetworkAdapter -VM $vm)
foreach ($m in @($p.mappings)) {
  $a=@($all | Where-Object { $_.Name -eq $m.nic })
  if ($a.Count -ne 1) { $script:rmKind='nic-not-found'; throw "VM '$($vm.Name)' has no network adapter named '$($m.nic)'" }
  if ($m.setSwitch) { if ($m.switch) { Connect-VMNetworkAdapter -VMNetworkAdapter $a[0] -SwitchName $m.switch } else { Disconnect-VMNetworkAdapter -VMNetworkAdapter $a[0] } }
  $fc=@{VMNetworkAdapter=$a[0]}
  if ($m.ipv4) {
    $fc.IPv4Address=$m.ipv4.address; $fc.IPv4SubnetMask=$m.ipv4.mask
    if ($m.ipv4.gateway) { $fc.IPv4DefaultGateway=$m.ipv4.gateway }
    if ($m.ipv4.dns1) { $fc.IPv4PreferredDNSServer=$m.ipv4.dns1 }
    if ($m.ipv4.dns2) { $fc.IPv4AlternateDNSServer=$m.ipv4.dns2 }
  } else { $fc.ClearFailoverIPv4Settings=$true }
  if ($m.ipv6) {
    $fc.IPv6Address=$m.ipv6.address; $fc.IPv6SubnetPrefixLength=$m.ipv6.prefixLength
    if ($m.ipv6.gateway) { $fc.IPv6DefaultGateway=$m.ipv6.gateway }
    if ($m.ipv6.dns1) { $fc.IPv6PreferredDNSServer=$m.ipv6.dns1 }
    if ($m.ipv6.dns2) { $fc.IPv6AlternateDNSServer=$m.ipv6.dns2 }
  } else { $fc.ClearFailoverIPv6Settings=$true }
  Set-VMNetworkAdapterFailoverConfiguration @fc
  [pscustomobject]@{Nic=$a[0].Name}
}
`

/** Registers the source once per process (New-EventLog needs admin; SourceExists scans logs). */
export const WRITE_EVENT = `
if ($p.register -and -not [Diagnostics.EventLog]::SourceExists($p.source)) { New-EventLog -LogName $p.log -Source $p.source }
Write-EventLog -LogName $p.log -Source $p.source -EventId $p.eventId -EntryType $p.entryType -Message $p.message
[pscustomobject]@{Written=$true}
`

export const PROBE = `
$m=Get-Module -ListAvailable -Name Hyper-V | Select-Object -First 1
[pscustomobject]@{PSVersion=$PSVersionTable.PSVersion.ToString(); HyperV=[bool]$m}
`
